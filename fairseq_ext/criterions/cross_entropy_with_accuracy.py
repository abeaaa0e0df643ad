"""``--criterion cross_entropy_with_accuracy``: fairseq's cross entropy plus token accuracy.

Logs ``accuracy`` (share of non-pad target tokens predicted exactly) beside
loss and perplexity, in training and validation logs and in tensorboard.
The counts stay tensors on the model's device: ``forward`` never waits for the
device (no ``int()``/``.item()``); fairseq sums them across workers and meters
turn them into numbers only when a log line is written.
"""

from dataclasses import dataclass

import torch
from fairseq import metrics, utils
from fairseq.criterions import register_criterion
from fairseq.criterions.cross_entropy import CrossEntropyCriterion, CrossEntropyCriterionConfig


@dataclass
class CrossEntropyWithAccuracyConfig(CrossEntropyCriterionConfig):
    pass


@register_criterion("cross_entropy_with_accuracy", dataclass=CrossEntropyWithAccuracyConfig)
class CrossEntropyWithAccuracy(CrossEntropyCriterion):
    def forward(self, model, sample, reduce=True):
        net_output = model(**sample["net_input"])
        loss, _ = self.compute_loss(model, net_output, sample, reduce=reduce)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        n_correct, total = self.count_correct(model, net_output, sample)
        logging_output = {
            "loss": loss.data, "ntokens": sample["ntokens"], "nsentences": sample["target"].size(0),
            "sample_size": sample_size, "n_correct": n_correct, "total": total,
        }
        return loss, sample_size, logging_output

    def count_correct(self, model, net_output, sample) -> tuple[torch.Tensor, torch.Tensor]:
        """(correct, predicted) non-pad target tokens, as 0-dim tensors on the model's device."""
        target = model.get_targets(sample, net_output)  # (B, T)
        with torch.no_grad():
            return correct_and_total(net_output[0], target, self.padding_idx)

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        log_accuracy(logging_outputs)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def correct_and_total(logits: torch.Tensor, target: torch.Tensor, padding_idx: int):
    """Tokens whose argmax is the target, and non-pad targets, as 0-dim int64 tensors (no host sync).

    >>> correct_and_total(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]), torch.tensor([[1, 1]]), padding_idx=0)
    (tensor(1), tensor(2))
    """
    keep = target.ne(padding_idx)  # (..., T)
    correct = logits.argmax(dim=-1).eq(target) & keep
    return correct.sum(), keep.sum()


def log_accuracy(logging_outputs) -> None:
    """Log ``accuracy`` = correct / predicted tokens, summed over workers and batches.

    The sums may be device tensors; they are logged as they are (no sync per step) and
    read only when a log line is formatted. A batch with nothing to predict adds 0 to both.
    """
    if not any("total" in log for log in logging_outputs):
        return
    metrics.log_scalar("total", sum(log.get("total", 0) for log in logging_outputs), round=1)
    metrics.log_scalar("n_correct", sum(log.get("n_correct", 0) for log in logging_outputs), round=1)
    metrics.log_derived("accuracy", _accuracy)


def _accuracy(meters) -> float:
    total = utils.item(meters["total"].sum)
    return round(utils.item(meters["n_correct"].sum) / total, 4) if total > 0 else float("nan")
