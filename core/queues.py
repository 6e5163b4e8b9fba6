"""The RQ queues' names: one per pool of workers (docs/architecture.md, "Queues")."""

MNIST_QUEUE = "mnist"  # the in-house models, shipped and trained
IF_QUEUE = "deepfloyd"  # DeepFloyd IF
TRAIN_QUEUE = "train"  # training jobs
QUEUES = (MNIST_QUEUE, IF_QUEUE, TRAIN_QUEUE)
