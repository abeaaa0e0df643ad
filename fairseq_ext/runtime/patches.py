"""THE table: every change fairseq_ext makes to fairseq (and to the process) at run time.

:func:`fairseq_ext.runtime.install` applies :data:`PATCHES` once, in this order (see there for the
steps between); each entry names what it replaces, with what, why, and the tests that fail without
it (``tests/runtime/test_patch_table.py`` checks that they exist, that nothing outside
``fairseq_ext/runtime/`` assigns to fairseq, and that applying the table twice changes nothing).
How an entry is applied, and the one sentinel convention, are in :mod:`fairseq_ext.runtime.patching`.

Each fairseq function is wrapped once: ``Trainer.load_checkpoint`` by one wrapper (resume choice,
then the task that checks the checkpoint), ``call_main`` by one (bf16, then the launcher).
fairseq's library functions keep their contract: ``checkpoint_utils.load_checkpoint`` is not
patched (a resume at ``--max-update`` ends in the training loop, not with ``SystemExit`` inside it).

Not a patch, though it sets a value in an object fairseq made: ``hf_denoising``'s ``build_model``
writes ``task`` into the settings of the BART model it has just built (fairseq's BART reads
``args.task`` whenever it loads a checkpoint; fairseq-hydra-train's model settings have none; fairseq
copies only its own fields into them, so no config given to ``build_model`` can carry it), tested
by ``tests/e2e/test_bart_e2e.py::test_hydra_config_trains``.
"""

from __future__ import annotations

import os
import sys

from fairseq_ext.errors import one_line_excepthook
from fairseq_ext.runtime import checkpoint_files, checkpoint_loading, fast_paths, launch, signals, torchaudio
from fairseq_ext.runtime.patching import ABSENT, Patch

CRASH = "tests/runtime/test_checkpoint_crash.py::"
DISTRIBUTED = "tests/runtime/test_distributed.py::"


def _one_line_user_errors(previous):
    program = os.path.basename(sys.argv[0])
    return one_line_excepthook(previous, "fairseq-train" if program == "train.py" else program)


def same_architecture_as(preset: str):
    """A maker of the architecture function that applies ``preset`` (a registered architecture)."""

    def replacement(current):
        if current is ABSENT:  # the model is not registered (yet): nothing to alias
            return current
        from fairseq.models import ARCH_CONFIG_REGISTRY

        apply_preset = ARCH_CONFIG_REGISTRY[preset]

        def architecture(args) -> None:
            apply_preset(args)

        architecture.__doc__ = f"The {preset} preset."
        return architecture

    return replacement


_DEFAULT_ARCHITECTURE = ("register_model(dataclass=...) registers the model's own name as an architecture that "
                         "does nothing, and refuses a second registration of that name; the name means the preset "
                         "(--arch fills the sizes into the command line's settings, as every preset does)")

PATCHES: tuple[Patch, ...] = (
    # -- not fairseq: in place before anything imports fairseq (which imports transformers) --
    Patch("sys:excepthook", _one_line_user_errors,
          what="a hook printing an uncaught UserError as `fairseq-train: error: MESSAGE`",
          why="fairseq's training programs have no main of ours to catch a user's mistake; a traceback hides it",
          tests=("tests/e2e/test_tokenizer_mismatch_e2e.py::test_other_tokenizers_data_stops_with_one_line_naming_both",
                 "tests/runtime/test_patch_table.py::test_a_missing_target_is_one_line_naming_it"),
          when="training program"),
    Patch("sys:modules['torchaudio']", torchaudio.absent_if_broken,
          what="None (absent) when the installed torchaudio cannot be imported; also decided, by its version "
               "alone, when the package is imported (fairseq_ext/__init__.py)",
          why="fairseq requires torchaudio, pip installs the newest, transformers imports it whenever installed",
          tests=("tests/test_install.py::test_a_torchaudio_that_cannot_load_is_ignored_with_one_line",)),
    # -- checkpoints: read behind the allow-list, checked by the task, written atomically, resumed readable --
    Patch("fairseq.checkpoint_utils:torch", checkpoint_loading.torch_with_safe_load,
          what="torch whose load is serialization.safe_torch_load (weights_only=True, fairseq's types allowed)",
          why="torch >= 2.6 refuses fairseq's own checkpoints; weights_only=False would unpickle anything",
          tests=("tests/test_serialization.py::test_fairseq_checkpoint_state_loads",
                 "tests/test_serialization.py::test_weights_only_cannot_be_turned_off_through_fairseq")),
    Patch("fairseq.checkpoint_utils:load_checkpoint_to_cpu", checkpoint_loading.checked_load_checkpoint_to_cpu,
          what="the same, then task.check_checkpoint(state, path) of the trainer's task that loads it",
          why="a checkpoint made with another tokenizer must stop with one line naming both",
          tests=("tests/e2e/test_tokenizer_mismatch_e2e.py::test_other_tokenizers_data_stops_with_one_line_naming_both",)),
    Patch("fairseq.trainer:Trainer.load_checkpoint", checkpoint_loading.trainer_load_checkpoint,
          what="one wrapper: on a resume from --save-dir, the newest readable checkpoint (checkpoint_files."
               "resume_from, temporaries removed), then the load with the trainer's task known to the reader",
          why="a kill while fairseq copies checkpoint_last.pt leaves it torn and fairseq refuses to start; "
              "the task check needs to know the task",
          tests=(CRASH + "test_fairseq_load_checkpoint_starts_fresh_when_nothing_reads",
                 CRASH + "test_kill_9_at_random_moments_always_ends_at_max_update",
                 DISTRIBUTED + "test_two_ranks_resume_also_from_a_torn_checkpoint_last")),
    Patch("fairseq.checkpoint_utils:torch_persistent_save", checkpoint_files.atomic_persistent_save,
          what="the same, writing a local file to a temporary and renaming it (async/remote writes unchanged)",
          why="a kill during a save must leave the old file or the new one, never half of one",
          tests=(CRASH + "test_fairseq_save_and_copy_go_through_a_temporary",)),
    Patch("fairseq.checkpoint_utils:PathManager", checkpoint_files.path_manager_with_atomic_copy,
          what="a subclass whose copy of local files goes through a temporary and a rename",
          why="fairseq copies checkpoint_1_4.pt over checkpoint_last.pt in place",
          tests=(CRASH + "test_fairseq_save_and_copy_go_through_a_temporary",)),
    # -- launch: torchrun/srun/spawn on CPU and CUDA, --bf16 off TPUs, DDP of CPU modules --
    Patch("fairseq.distributed.utils:call_main", launch.launching_call_main,
          what="one wrapper: --bf16 untied from --tpu (precision), then the distributed config from torchrun/srun, "
               "or ranks spawned on CPU",
          why="fairseq turns --bf16 into --tpu, and derives its distributed set-up from the CUDA device count",
          tests=("tests/runtime/test_bf16.py::test_call_main_unties_only_what_fairseq_implied",
                 DISTRIBUTED + "test_fairseq_spawn_on_cpu_with_the_installed_package",
                 DISTRIBUTED + "test_torchrun_two_cpu_ranks_match_one_process")),
    Patch("fairseq.models.distributed_fairseq_model:DistributedDataParallel", launch.ddp_that_accepts_cpu_modules,
          what="DistributedDataParallel without device_ids for a CPU module (broadcast_buffers renamed where "
               "torch deprecated it)",
          why="fairseq passes device_ids for every module, which DDP refuses for a CPU one",
          tests=(DISTRIBUTED + "test_torchrun_two_cpu_ranks_match_one_process",)),
    Patch("fairseq.distributed.utils:torch", launch.torch_with_safe_broadcast_load,
          what="torch whose load (only _broadcast_object_slow's) is safe_torch_load plus fairseq's _TensorPlaceholder",
          why="rank 0 sends the checkpoint it read to the other ranks through a bare torch.load, which "
              "torch >= 2.6 refuses",
          tests=(DISTRIBUTED + "test_two_ranks_resume_also_from_a_torn_checkpoint_last",)),
    # -- the training step's fast paths (same results; see fast_paths) --
    Patch("fairseq.models.roberta.model:RobertaLMHead.forward", fast_paths.lm_head_taking_positions,
          what="the same, which also takes the masked positions as flat indices (gathered with index_select)",
          why="selecting with a boolean mask makes the host wait for the device in every masked-LM step",
          tests=("tests/runtime/test_fast_paths.py::test_lm_head_positions_give_what_the_mask_gives",
                 "tests/criterions/test_masked_lm_positions.py::test_positions_and_mask_give_the_same_loss_and_grads")),
    Patch("fairseq.modules.multihead_attention:MultiheadAttention.forward",
          fast_paths.fused_encoder_decoder_attention,
          what="the same, with static_kv cleared where there is no incremental state (training, scoring)",
          why="static_kv keeps BART's cross-attention off torch's fused attention, where it computes the same",
          tests=("tests/runtime/test_fast_paths.py::test_cross_attention_takes_the_fused_path_with_the_same_result",
                 "tests/runtime/test_fast_paths.py::"
                 "test_in_a_whole_bart_every_cross_attention_but_the_alignment_layers_is_fused")),
    Patch("fairseq.optim.adam:Adam.step", fast_paths.multi_tensor_adam_step,
          what="the same update over lists of tensors (torch._foreach_*) for float32 groups without amsgrad",
          why="fairseq's Adam updates one tensor at a time: ten small ops, on a GPU ten kernel launches, each",
          tests=("tests/runtime/test_fast_paths.py::test_adam_over_lists_of_tensors_is_bit_identical_to_fairseqs",)),
    # -- the training loop (only where one is loaded: fairseq-train, python -m fairseq_cli.train, ranks) --
    Patch("fairseq_cli.train:validate_and_save", signals.stop_on_signal,
          what="the same, which saves and stops at the first update boundary after SIGUSR1/SIGTERM (their "
               "handlers, recording the signal, installed with it)",
          why="a cluster stops jobs with a warning signal or SIGTERM, and fairseq dies without saving",
          tests=("tests/runtime/test_signals.py::test_sigterm_saves_exits_0_and_resumes_at_that_update_and_batch",
                 "tests/runtime/test_signals.py::test_installed_only_where_the_training_loop_runs"),
          when="training", loaded_only=True),
    Patch("fairseq_cli.train:train", checkpoint_files.stop_when_nothing_to_train,
          what="the same, which ends the run before its first update when the resumed checkpoint already "
               "reached --max-update",
          why="fairseq trains one update more and overwrites checkpoint_last.pt (a job requeued after its last save)",
          tests=(CRASH + "test_a_resume_at_max_update_trains_nothing",
                 CRASH + "test_kill_9_at_random_moments_always_ends_at_max_update"),
          when="training", loaded_only=True),
    # -- registries (after fairseq_ext's components are registered) --
    Patch("fairseq.models:ARCH_CONFIG_REGISTRY['hf_bert']", same_architecture_as("hf_bert_base"),
          what="the hf_bert_base preset (BERT-base)", why=_DEFAULT_ARCHITECTURE,
          tests=("tests/models/test_models_bert.py::test_command_line_presets_fill_what_the_user_left_unset",)),
    Patch("fairseq.models:ARCH_CONFIG_REGISTRY['t5_encoder']", same_architecture_as("t5_encoder_small"),
          what="the t5_encoder_small preset", why=_DEFAULT_ARCHITECTURE,
          tests=("tests/models/test_models_t5.py::test_command_line_presets_fill_what_the_user_left_unset",)),
)
