"""``--criterion cross_entropy_with_accuracy``: fairseq's cross entropy plus token accuracy.

Logs ``accuracy`` (share of non-pad target tokens predicted exactly) beside
loss and perplexity, in training and validation logs and in tensorboard.
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

    def count_correct(self, model, net_output, sample) -> tuple[int, int]:
        target = model.get_targets(sample, net_output)  # (B, T)
        keep = target.ne(self.padding_idx)
        with torch.no_grad():
            predicted = net_output[0].argmax(dim=-1)  # (B, T)
        return int(predicted.eq(target).masked_select(keep).sum()), int(keep.sum())

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        log_accuracy(logging_outputs)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def log_accuracy(logging_outputs) -> None:
    """Log ``accuracy`` = correct / predicted tokens, summed over workers and batches."""
    total = utils.item(sum(log.get("total", 0) for log in logging_outputs))
    if total > 0:
        metrics.log_scalar("total", total)
        metrics.log_scalar("n_correct", utils.item(sum(log.get("n_correct", 0) for log in logging_outputs)))
        metrics.log_derived(
            "accuracy",
            lambda meters: round(meters["n_correct"].sum / meters["total"].sum, 4)
            if meters["total"].sum > 0 else float("nan"),
        )
