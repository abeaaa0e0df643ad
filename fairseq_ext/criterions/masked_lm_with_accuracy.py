"""``--criterion masked_lm_with_accuracy``: fairseq's masked-LM loss plus MLM accuracy.

Logs ``accuracy`` (share of masked positions whose token is predicted exactly)
beside loss and perplexity, in training and validation logs and in tensorboard.
"""

from dataclasses import dataclass

import torch
from fairseq import modules
from fairseq.criterions import register_criterion
from fairseq.criterions.masked_lm import MaskedLmConfig, MaskedLmLoss

from fairseq_ext.criterions.cross_entropy_with_accuracy import log_accuracy


@dataclass
class MaskedLMWithAccuracyConfig(MaskedLmConfig):
    pass


@register_criterion("masked_lm_with_accuracy", dataclass=MaskedLMWithAccuracyConfig)
class MaskedLMWithAccuracy(MaskedLmLoss):
    def forward(self, model, sample, reduce=True):
        masked = sample["target"].ne(self.padding_idx)  # (B, T)
        sample_size = int(masked.sum())
        if sample_size == 0:  # nothing chosen in this batch: project everything, like fairseq
            masked = None
        logits = model(**sample["net_input"], masked_tokens=masked)[0]  # (N, V)
        targets = model.get_targets(sample, [logits])
        if masked is not None:
            targets = targets[masked]
        loss = modules.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), reduction="sum",
                                     ignore_index=self.padding_idx)
        with torch.no_grad():
            keep = targets.ne(self.padding_idx)
            n_correct = int(logits.argmax(-1).eq(targets).masked_select(keep).sum())
        logging_output = {
            "loss": loss.data, "ntokens": sample["ntokens"], "nsentences": sample["nsentences"],
            "sample_size": sample_size, "n_correct": n_correct, "total": int(keep.sum()),
        }
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        log_accuracy(logging_outputs)
