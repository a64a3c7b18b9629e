"""The training loop every stage shares: one process or many (``torchrun``), gradient
accumulation, AdamW with warm-up and cosine decay, checkpoints to resume from, metrics.

A stage supplies a ``StageTask``: its training examples, how many loss targets each holds,
the summed loss of a micro-batch, and a held-out evaluation. Each process computes its
share of the global batch (``minmo_core.train.data``) with the loss divided by the global
batch's target count; the gradients are then summed over the processes (an all-reduce, as
DDP does) so every process takes the same step as one process would over the whole batch.

Checkpoints (``out/checkpoints/step-NNNNNN``) hold the trained parameters (safetensors), the
optimizer's state (tensors, read back with ``weights_only=True``), the RNG state and the run's
configuration. Since the data order and the learning rate are functions of the step, a run
killed at any point and started again continues from its last checkpoint to the same
weights, bit for bit. Metrics go to stdout and ``out/log.jsonl`` (and TensorBoard on
request). The result is an adapters folder (``out/adapters``) the engine loads.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from minmo_core.common.checkpoints import load_state_dict
from minmo_core.errors import CheckpointError, ConfigError, first_line
from minmo_core.train.config import TrainingRun, run_from_dict
from minmo_core.train.data import global_batch, rank_share
from minmo_core.train.models import TrainingModels, prepare

CHECKPOINTS = "checkpoints"
FINAL_LR_FRACTION = 0.1  # the cosine decay ends at 10 % of the peak rate


class StageTask(Protocol):
    examples: Sequence  # the training items, indexed by the data order

    def count(self, item) -> int:
        """Loss targets in one item (tokens, or 1 for a classified decision)."""

    def loss_sum(self, items: Sequence) -> torch.Tensor:
        """The summed loss over ``items`` (a float32 scalar with a graph)."""

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics ({} without a held-out set)."""


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Distributed:
        """torchrun's environment: joins the process group (gloo on a CPU, nccl on CUDA)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Sum ``tensors`` in place over the processes (one flat all-reduce)."""
        if self.world == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


@dataclass
class Result:
    step: int  # optimizer steps done
    losses: list[float] = field(default_factory=list)  # per step, this run's part
    metrics: dict[str, float] = field(default_factory=dict)  # the last evaluation
    adapters: Path | None = None  # the adapters folder written at the end


def learning_rate(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 10 % at
    ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return peak * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * cosine)


class Trainer:
    def __init__(
        self,
        run: TrainingRun,
        models: TrainingModels,
        task: StageTask,
        export: Callable[[TrainingModels, Path], Path] | None = None,
        parallel: Distributed | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.run, self.models, self.task = run, models, task
        self.stage = run.stage
        self.out = Path(run.out)
        self.export = export
        self.parallel = parallel or Distributed()
        self.print = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.accumulation = self.stage.accumulation(self.parallel.world)
        self.params = prepare(models, self.stage)
        groups: dict[float, list[torch.nn.Parameter]] = {}
        for name, param in self.params.items():
            rate = self.stage.lr
            if name.startswith("encoder.") and self.stage.encoder_lr is not None:
                rate = self.stage.encoder_lr
            groups.setdefault(rate, []).append(param)
        self.optimizer = torch.optim.AdamW(
            [{"params": ps, "peak": rate, "lr": rate} for rate, ps in groups.items()],
            weight_decay=self.stage.weight_decay,
        )
        self.step = 0
        self._board = None
        self.sharded = self.stage.fsdp and self.parallel.world > 1
        if self.sharded:
            from minmo_core.train.sharding import shard_llm

            layers = shard_llm(models.llm.model, models.device, self.parallel.world)
            self.print(f"fsdp: {layers} LLM layers sharded over {self.parallel.world} processes")

    # -- checkpoints ------------------------------------------------------------------------
    def _checkpoints(self) -> list[Path]:
        folder = self.out / CHECKPOINTS
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("step-*") if (p / "state.json").is_file())

    def save(self) -> Path:
        """Write a resume point for the current step (the main process; others wait)."""
        folder = self.out / CHECKPOINTS / f"step-{self.step:06d}"
        if self.parallel.main:
            tmp = folder.with_name(folder.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            state = {k: p.detach().cpu().contiguous() for k, p in self.params.items()}
            save_file(state, str(tmp / "trainable.safetensors"))
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            save_file({"cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
            meta = {"step": self.step, "run": self.run.to_dict(), "world": self.parallel.world}
            (tmp / "state.json").write_text(json.dumps(meta, indent=2) + "\n")
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
            for old in self._checkpoints()[: -self.stage.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.parallel.barrier()
        return folder

    def resume(self) -> int:
        """Continue from the newest checkpoint in the output folder, if any; the step."""
        found = self._checkpoints()
        if not found:
            return 0
        folder = found[-1]
        try:
            meta = json.loads((folder / "state.json").read_text())
            saved = run_from_dict(meta["run"]).stage
        except (OSError, ValueError, KeyError, ConfigError) as err:
            raise CheckpointError(f"{folder} is not a readable checkpoint ({err})") from err
        mine = self.stage
        differs = [
            name
            for name in ("stage", "trains", "batch_size", "lr", "seed", "train", "warmup_steps")
            if getattr(saved, name) != getattr(mine, name)
        ]
        if differs:
            raise ConfigError(
                f"{folder} was written by a different run ({', '.join(differs)} differ); "
                f"use a new output folder or remove {self.out / CHECKPOINTS}"
            )
        state = load_state_dict(folder / "trainable.safetensors")
        if set(state) != set(self.params):
            raise CheckpointError(f"{folder} holds other parameters than this stage trains")
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(state[name])
        path = folder / "optimizer.pt"
        try:
            optimizer = torch.load(path, weights_only=True, map_location="cpu")
            self.optimizer.load_state_dict(optimizer)
        except (OSError, RuntimeError, ValueError, KeyError, EOFError) as err:
            raise CheckpointError(f"{path} is damaged ({first_line(err)})") from err
        torch.set_rng_state(load_state_dict(folder / "rng.safetensors")["cpu"])
        self.step = int(meta["step"])
        self._truncate_log()
        self.print(f"resuming {self.stage.stage} at step {self.step} from {folder}")
        return self.step

    # -- logging ----------------------------------------------------------------------------
    def _truncate_log(self) -> None:
        """Drop log lines past the resumed step (the killed run's lost steps come again)."""
        path = self.out / "log.jsonl"
        if not self.parallel.main or not path.is_file():
            return
        kept = [
            line
            for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= self.step
        ]
        path.write_text("".join(f"{line}\n" for line in kept))

    def _log(self, record: dict) -> None:
        if not self.parallel.main:
            return
        record = {"stage": self.stage.stage, **record}
        with (self.out / "log.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        shown = " ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()
        )
        self.print(shown)
        if self.stage.tensorboard:
            self._tensorboard(record)

    def _tensorboard(self, record: dict) -> None:
        if self._board is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ConfigError(
                    "tensorboard = true needs the tensorboard package: pip install tensorboard"
                ) from err
            self._board = SummaryWriter(str(self.out / "tensorboard"))
        for key, value in record.items():
            if isinstance(value, int | float) and key != "step":
                self._board.add_scalar(f"{self.stage.stage}/{key}", value, record["step"])

    # -- the loop ---------------------------------------------------------------------------
    def _autocast(self):
        precision = self.stage.precision
        device = self.models.device
        if precision == "bfloat16" or (precision == "auto" and device.type == "cuda"):
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self) -> float:
        """One optimizer step; the global batch's mean loss per target."""
        stage, parallel = self.stage, self.parallel
        examples = self.task.examples
        batch = global_batch(len(examples), stage.batch_size, stage.seed, self.step)
        total = sum(self.task.count(examples[i]) for i in batch)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, group["peak"], stage.warmup_steps, stage.steps)
        local = torch.zeros((), dtype=torch.float64)
        for micro in rank_share(batch, stage.micro_batch, parallel.rank, parallel.world):
            with self._autocast():
                loss = self.task.loss_sum([examples[i] for i in micro]) / total
            loss.backward()
            local += loss.detach().double().cpu()
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        parallel.sum_([*grads, local])
        if stage.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), stage.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return float(local)

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics, from the main process (the others return {}; with FSDP they run
        the evaluation too, since every LLM forward needs every process)."""
        if not self.parallel.main and not self.sharded:
            return {}
        modules = self.models.modules()
        for part in self.stage.parts:
            modules[part].eval()
        try:
            metrics = self.task.evaluate()
            return metrics if self.parallel.main else {}
        finally:
            for part in self.stage.parts:
                modules[part].train()

    def fit(self, stop_after: int | None = None) -> Result:
        """Train to ``stage.steps`` (resuming if a checkpoint exists), evaluate, export.

        ``stop_after`` ends the run after that many steps of this call, as a kill would
        (no export): the resume tests use it."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.resume()
        result = Result(self.step)
        started, done_here = time.perf_counter(), 0
        while self.step < self.stage.steps:
            if stop_after is not None and done_here == stop_after:
                result.step = self.step
                return result
            tick = time.perf_counter()
            loss = self.train_step()
            done_here += 1
            result.losses.append(loss)
            record = {"step": self.step, "loss": loss, "lr": self.optimizer.param_groups[0]["lr"]}
            record["s_per_step"] = round(time.perf_counter() - tick, 3)
            self._log(record)
            last = self.step == self.stage.steps
            if self.step % self.stage.save_every == 0 or last:
                self.save()
            every = self.stage.eval_every
            if every and self.step % every == 0 and not last:
                self._log({"step": self.step, **self.evaluate()})
        result.step = self.step
        result.metrics = self.evaluate()
        self._log({"step": self.step, **result.metrics, "wall_s": time.perf_counter() - started})
        if self.export is not None and self.parallel.main:
            result.adapters = self.export(self.models, self.out / "adapters")
        self.parallel.barrier()
        return result


__all__ = ["Distributed", "Result", "StageTask", "Trainer", "learning_rate"]
