"""A tiny random DeepFloyd IF, both stages, built from config and saved the way the hub repos are laid out, so the
service loads it through the real diffusers and transformers paths (`from_pretrained`); nothing is downloaded.

The UNets follow diffusers' own IF tests (tests/pipelines/deepfloyd_if/__init__.py) at 16 px (stage I) and 32 px
(stage II); the T5 encoder is 2 layers of width 32; the tokenizer a SentencePiece model trained here on a few
prompts, saved as `tokenizer/spiece.model` as in DeepFloyd/IF-I-XL-v1.0. Weights are saved as the fp16 variant, or
as another (`variant=None`: the plain files, as a local fp32 folder has them).
"""

import io
import shutil
from pathlib import Path

import sentencepiece as spm
import torch
from diffusers import DDPMScheduler, IFPipeline, IFSuperResolutionPipeline, UNet2DConditionModel
from transformers import T5Config, T5EncoderModel, T5Tokenizer

PROMPTS = [
    "an oil painting of an old man",
    "an oil painting of people around a campfire",
    "a lithograph of a skull",
    "a lithograph of waterfalls",
    "a high quality photo",
    "a photo of a hipster barista",
    "a rocket ship",
    "a pencil",
]
STAGE1_SIZE, STAGE2_SIZE = 16, 32


def _tokenizer(folder: Path) -> T5Tokenizer:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(PROMPTS * 4),
        model_writer=model,
        vocab_size=40,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    folder.mkdir(parents=True)
    (folder / "spiece.model").write_bytes(model.getvalue())
    return T5Tokenizer.from_pretrained(folder)


def _unet(in_channels: int, size: int, **extra: object) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=size,
        layers_per_block=1,
        block_out_channels=[32, 64],
        down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"],
        in_channels=in_channels,
        out_channels=6,
        cross_attention_dim=32,
        encoder_hid_dim=32,
        attention_head_dim=8,
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
        **extra,
    )


def _scheduler(**extra: object) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", **extra)


def _learned() -> DDPMScheduler:
    return _scheduler(
        thresholding=True,
        dynamic_thresholding_ratio=0.95,
        sample_max_value=1.5,
        prediction_type="epsilon",
        variance_type="learned_range",
    )


def build(root: Path, variant: str | None = "fp16") -> tuple[Path, Path]:
    """Saves stage I (with its text encoder and tokenizer) and stage II under `root`, their weights as `variant`;
    returns their folders."""
    torch.manual_seed(0)  # test-only weights; the service itself never touches the global RNG
    scratch = root / "scratch-tokenizer"
    tokenizer = _tokenizer(scratch)
    encoder = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4)
    )
    common = {"safety_checker": None, "feature_extractor": None, "watermarker": None, "requires_safety_checker": False}
    stage1 = IFPipeline(
        tokenizer=tokenizer, text_encoder=encoder, unet=_unet(3, STAGE1_SIZE), scheduler=_learned(), **common
    )
    stage2 = IFSuperResolutionPipeline(
        tokenizer=None,
        text_encoder=None,
        unet=_unet(
            6,
            STAGE2_SIZE,
            class_embed_type="timestep",
            mid_block_scale_factor=1.414,
            time_embedding_act_fn="gelu",
            time_embedding_dim=32,
        ),
        scheduler=_learned(),
        image_noising_scheduler=_scheduler(),
        **common,
    )
    first, second = root / "IF-I", root / "IF-II"
    stage1.save_pretrained(first, variant=variant)
    stage2.save_pretrained(second, variant=variant)
    shutil.rmtree(first / "tokenizer")  # the hub's layout: the SentencePiece model, no tokenizer.json
    shutil.move(scratch, first / "tokenizer")
    return first, second


def save_embeddings(stage1: Path, path: Path, prompts: list[str]) -> None:
    """A file of precomputed embeddings as the course provides: {prompt: (1, L, D)}, "" the unconditional."""
    pipe = IFPipeline.from_pretrained(
        stage1, safety_checker=None, feature_extractor=None, watermarker=None, variant="fp16"
    )
    table = {}
    for prompt in ["", *prompts]:
        embeds, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False, device="cpu", clean_caption=False)
        table[prompt] = embeds.detach().clone()
    torch.save(table, path)
