"""``--criterion masked_lm_with_accuracy``: fairseq's masked-LM loss plus MLM accuracy.

Logs ``accuracy`` (share of masked positions whose token is predicted exactly)
beside loss and perplexity, in training and validation logs and in tensorboard.
``forward`` never waits for the device. fairseq_ext's masked-LM batches carry
``masked_positions`` (flat indices of the targets, made by the data loader on the
host) and their count: the model's head gathers those rows with ``index_select``
and ``sample_size`` is that count, an int (fairseq's trainer divides by
``sample_size or 1.0``, which would read a device value). Other batches (fairseq's
own datasets) are selected with the boolean mask as fairseq's ``masked_lm`` does,
``sample_size`` and the counts 0-dim tensors, a batch with nothing masked handled
with ``torch.where``.
"""

from dataclasses import dataclass

import torch
from fairseq import modules
from fairseq.criterions import register_criterion
from fairseq.criterions.masked_lm import MaskedLmConfig, MaskedLmLoss

from fairseq_ext.criterions.cross_entropy_with_accuracy import correct_and_total, log_accuracy


@dataclass
class MaskedLMWithAccuracyConfig(MaskedLmConfig):
    pass


@register_criterion("masked_lm_with_accuracy", dataclass=MaskedLMWithAccuracyConfig)
class MaskedLMWithAccuracy(MaskedLmLoss):
    def forward(self, model, sample, reduce=True):
        if "masked_positions" in sample:  # fairseq_ext's masked-LM batches: positions made on the host
            positions = sample["masked_positions"]  # (N,) flat indices into (B*T)
            sample_size = sample["nmasked"]  # an int: fairseq's `sample_size or 1.0` reads no device value
            logits = model(**sample["net_input"], masked_tokens=positions)[0]  # (N, V)
            targets = sample["target"].view(-1).index_select(0, positions)  # (N,)
        else:
            masked = sample["target"].ne(self.padding_idx)  # (B, T)
            sample_size = masked.sum()  # 0-dim tensor
            # nothing chosen in this batch: project every position, like fairseq (all targets are pad: loss 0)
            masked = torch.where(masked.any(), masked, torch.ones_like(masked))
            logits = model(**sample["net_input"], masked_tokens=masked)[0]  # (N, V)
            targets = model.get_targets(sample, [logits])[masked]  # (N,)
        loss = modules.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), reduction="sum",
                                     ignore_index=self.padding_idx)
        with torch.no_grad():
            n_correct, total = correct_and_total(logits, targets, self.padding_idx)
        logging_output = {
            "loss": loss.data, "ntokens": sample["ntokens"], "nsentences": sample["nsentences"],
            "sample_size": sample_size, "n_correct": n_correct, "total": total,
        }
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        log_accuracy(logging_outputs)
