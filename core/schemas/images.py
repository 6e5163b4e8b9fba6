"""An image input: exactly one of an upload, inline base64, a dataset item, or an earlier job's artifact."""

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMS = ("upload_id", "base64", "dataset", "job_id")


class ImageInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upload_id: str | None = Field(default=None, max_length=64, description="an id from POST /v1/uploads")
    base64: str | None = Field(default=None, description="a PNG, JPEG or WebP file, base64-encoded")
    dataset: str | None = Field(default=None, max_length=64, description="a dataset id, e.g. mnist-5k")
    index: int | None = Field(default=None, ge=0, description="the item of `dataset`")
    job_id: str | None = Field(
        default=None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="an earlier job of the caller"
    )
    artifact: str | None = Field(default=None, max_length=128, description="an artifact of `job_id`")

    @model_validator(mode="after")
    def _exactly_one_form(self) -> Self:
        given = [f for f in FORMS if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(FORMS)}; got {len(given)}")
        if (self.dataset is None) != (self.index is None):
            raise ValueError("`dataset` and `index` go together")
        if (self.job_id is None) != (self.artifact is None):
            raise ValueError("`job_id` and `artifact` go together")
        return self

    @property
    def form(self) -> str:
        return next(f for f in FORMS if getattr(self, f) is not None)
