"""Transfer-learning targets (Zou et al.): the run's teacher, and models that fine-tune it.

With a `teacher` section (`farm.teacher_config.TeacherConfig`) every model of the run, target and shadows,
starts from the teacher's body (every parameter but the head, `farm.models.head_parameters`) and its own
freshly drawn head, then trains on its members as any model does (`farm.train.train_group`, vmapped groups),
all layers or the head only (the body frozen: requires_grad off, so no optimizer ever steps it).

The teacher is a file (`teacher.path`: a state_dict or a TorchScript archive, checked against the model in
`plan_teacher`) or trained by the farm, once per run, on a public split of the population that no model's
membership game uses (`split_public`). Either way `ensure_teacher` stores it in the run directory as
`teacher/teacher.pt` (atomic write) and records it under "teacher" in run.json (with its sha256, written last);
a re-run finds it there and neither trains nor reads the file again. Trainer actors read it from the run
directory (`teacher_init`), which every node sees.
"""

from __future__ import annotations

import hashlib
import io
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from farm.config import RunConfig, TrainConfig, model_seed
from farm.data import Dataset
from farm.errors import ConfigError, RunError
from farm.models import build_model, head_parameters
from farm.readers import seeded_rng
from farm.shards import RUN_JSON
from farm.storage import RunDir
from farm.train import predict_in_chunks, steps_per_epoch, train_group

TEACHER_PT = "teacher/teacher.pt"
_PUBLIC_STREAM = 7  # RNG stream of the public split (farm.readers: synthetic 1, farm.data: subsample 2)
_TEACHER_ID = -1  # model_seed(run seed, -1): the teacher's seed, distinct from every model's


# ---------------------------------------------------------------- planning (before any file is written)


def split_public(cfg: RunConfig, dataset: Dataset) -> tuple[Dataset, Dataset]:
    """(population, public): `teacher.public_fraction` of the examples, drawn from the run seed, go to the teacher
    (only those labelled `teacher.classes`, when given); the membership game is played on all the others."""
    t, n = cfg.teacher, len(dataset)
    public = np.zeros(n, bool)
    public[seeded_rng(cfg.seed, _PUBLIC_STREAM).permutation(n)[: round(t.public_fraction * n)]] = True
    bad = [c for c in t.classes if c >= dataset.info.num_classes]
    if bad:
        raise ConfigError(f"teacher.classes: {bad} are not labels of {dataset.info.name!r} "
                          f"(0 .. {dataset.info.num_classes - 1})")
    taught = public & np.isin(dataset.y, t.classes) if t.classes else public
    if taught.sum() < 1 or (~public).sum() < 2:
        raise ConfigError(f"teacher.public_fraction: {t.public_fraction} of {n} examples leaves {int(taught.sum())} "
                          f"for the teacher and {int((~public).sum())} for the models; expected at least 1 and 2")
    return (Dataset(dataset.info, dataset.x[~public], dataset.y[~public]),
            Dataset(dataset.info, dataset.x[taught], dataset.y[taught]))


def plan_teacher(cfg: RunConfig, dataset: Dataset, run: RunDir) -> tuple[Dataset, Dataset | None]:
    """(population, the teacher's public data or None) for `cfg`; raises ConfigError for a teacher that cannot
    serve this model. A teacher file is read and checked unless the run already stores its teacher."""
    if cfg.teacher is None:
        return dataset, None
    model = build_model(cfg.model, info=dataset.info)
    if len(head_parameters(model)) == len(model.state_dict()):
        raise ConfigError(f"teacher: model {cfg.model.name!r} has no layers below its head to transfer; "
                          "choose a model with hidden layers (e.g. mlp, cnn)")
    if cfg.teacher.path is None:
        return split_public(cfg, dataset)
    if cfg.teacher.classes:
        raise ConfigError("teacher.classes: only for a teacher the farm trains; remove it or teacher.path")
    if stored_record(run) is None:
        read_teacher_file(cfg.teacher.path, model, cfg)
    return dataset, None


def _load_file(path: str, where: str) -> dict:
    if not Path(path).is_file():
        raise ConfigError(f"{where}: not found")
    try:
        with zipfile.ZipFile(path) as archive:
            scripted = any(name.rsplit("/", 1)[-1] == "constants.pkl" for name in archive.namelist())
    except zipfile.BadZipFile:
        scripted = False  # torch.save's legacy format: not a zip
    try:
        if scripted:
            with warnings.catch_warnings():  # torch 2.14 marks torch.jit.load deprecated; TorchScript files still load
                warnings.simplefilter("ignore", FutureWarning)
                return dict(torch.jit.load(path, map_location="cpu").state_dict())
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{where}: not a state_dict or TorchScript file ({reason})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{where}: expected a state_dict (a mapping of parameter names to tensors)")
    return state


def read_teacher_file(path: str, model: nn.Module, cfg: RunConfig) -> dict:
    """The state dict in `path` (state_dict or TorchScript), float32 on the CPU, checked against `model`'s body:
    every body parameter present with the model's shape, nothing else but the head. ConfigError otherwise."""
    where = f"teacher.path: {path}"
    state = _load_file(path, where)
    head = set(head_parameters(model))
    what = f"model {cfg.model.name!r} of this config"
    body = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in head}
    for name, shape in body.items():
        if name not in state:
            raise ConfigError(f"{where}: has no parameter {name!r}, which the {what} needs (shape {list(shape)})")
        if tuple(state[name].shape) != shape:
            raise ConfigError(f"{where}: parameter {name!r} has shape {list(state[name].shape)}, "
                              f"the {what} needs {list(shape)}")
    extra = sorted(set(state) - set(body) - head)
    if extra:
        raise ConfigError(f"{where}: holds parameters the {what} does not have: {', '.join(extra[:3])}")
    return {k: v.detach().float().contiguous() for k, v in state.items()}


# ---------------------------------------------------------------- the stored teacher


def stored_record(run: RunDir) -> dict | None:
    """run.json's "teacher" record when teacher/teacher.pt is there and is the file it records; else None."""
    if not (run.is_file(RUN_JSON) and run.is_file(TEACHER_PT)):
        return None
    try:
        record = run.read_json(RUN_JSON).get("teacher")
    except ValueError:
        return None
    if not isinstance(record, dict) or hashlib.sha256(run.read_bytes(TEACHER_PT)).hexdigest() != record.get("sha256"):
        return None
    return record


def stored_teacher(run: RunDir) -> dict:
    """The state dict of the run's stored teacher; RunError when it is missing or not the one run.json records."""
    if stored_record(run) is None:
        raise RunError(f"{run.path(TEACHER_PT)}: missing, or not the teacher run.json records; "
                       "re-run shadowfarm train (it stores the teacher again)")
    return torch.load(io.BytesIO(run.read_bytes(TEACHER_PT)), map_location="cpu", weights_only=True)


def _teacher_train_config(cfg: RunConfig) -> TrainConfig:
    t = cfg.teacher
    return TrainConfig(optimizer=cfg.train.optimizer, lr=t.lr, momentum=cfg.train.momentum, epochs=t.epochs,
                       batch_size=cfg.train.batch_size)


def _accuracy(state: dict, cfg: RunConfig, data: Dataset) -> float:
    model = build_model(cfg.model, info=data.info)
    model.load_state_dict(state)
    model.eval()
    logits = predict_in_chunks(lambda xb: model(xb)[None], torch.as_tensor(data.x))[0]
    return float((logits.argmax(-1).numpy() == data.y).mean())


def train_teacher(cfg: RunConfig, public: Dataset) -> tuple[dict, dict]:
    """(state dict, record) of the teacher trained on `public` (on the CPU unless farm.device is cuda)."""
    device = torch.device("cuda" if cfg.farm.device == "cuda" else "cpu")
    x, y = torch.as_tensor(public.x, device=device), torch.as_tensor(public.y, device=device)
    member = np.ones((1, len(public)), bool)
    train_cfg = _teacher_train_config(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cfg.farm.num_cpus)))  # as a trainer actor (a small model: more only waits)
    try:
        group = train_group(model_cfg=cfg.model, train_cfg=train_cfg, info=public.info, x=x, y=y, member=member,
                            seeds=[model_seed(cfg.seed, _TEACHER_ID)], vectorize=False,
                            n_steps_per_epoch=steps_per_epoch(member, train_cfg.batch_size))
    finally:
        torch.set_num_threads(threads)
    state = {k: v.detach().cpu() for k, v in group.state_dicts[0].items()}
    record = {"source": "trained", "n_public": len(public), "classes": list(cfg.teacher.classes) or None,
              "epochs": train_cfg.epochs, "lr": train_cfg.lr, "seed": model_seed(cfg.seed, _TEACHER_ID),
              "seconds": round(group.seconds, 3), "public_accuracy": _accuracy(state, cfg, public)}
    return state, record


def ensure_teacher(cfg: RunConfig, run: RunDir, *, population: Dataset, public: Dataset | None) -> dict | None:
    """Store the run's teacher (train it, or copy the checked file) unless the run has it; returns its record."""
    if cfg.teacher is None:
        return None
    record = stored_record(run)
    if record is not None:
        return record
    start = time.perf_counter()
    if cfg.teacher.path is None:
        state, record = train_teacher(cfg, public)
    else:
        state = read_teacher_file(cfg.teacher.path, build_model(cfg.model, info=population.info), cfg)
        record = {"source": "file", "file": cfg.teacher.path,
                  "file_sha256": hashlib.sha256(Path(cfg.teacher.path).read_bytes()).hexdigest()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    head = head_parameters(build_model(cfg.model, info=population.info))
    record = {**record, "file_in_run": TEACHER_PT, "sha256": hashlib.sha256(data).hexdigest(), "head": head,
              "fine_tune": cfg.teacher.fine_tune, "population_accuracy": _accuracy(state, cfg, population),
              "stored_seconds": round(time.perf_counter() - start, 3)}
    run.write_bytes(TEACHER_PT, data)
    saved = run.read_json(RUN_JSON)
    run.write_json(RUN_JSON, {**saved, "teacher": record})  # last: the record makes the stored teacher valid
    return record


# ---------------------------------------------------------------- fine-tuning


def fine_tune_init(teacher: dict, mode: str) -> Callable[[nn.Module], None]:
    """`train_group`'s init_model: copy the teacher's body into a freshly built model (its head stays as drawn
    from the model's seed); with mode "head", freeze the body (requires_grad off)."""
    def init(model: nn.Module) -> None:
        head = set(head_parameters(model))
        missing, unexpected = model.load_state_dict({k: v for k, v in teacher.items() if k not in head}, strict=False)
        if unexpected or set(missing) - head:
            raise RunError(f"{TEACHER_PT}: does not fit the model (missing {sorted(set(missing) - head)[:3]}, "
                           f"unexpected {unexpected[:3]})")
        if mode == "head":
            for name, param in model.named_parameters():
                param.requires_grad_(name in head)
    return init


def teacher_init(cfg: RunConfig, run: RunDir) -> Callable[[nn.Module], None] | None:
    """init_model of the run's models: fine-tune the stored teacher, or None without a teacher section."""
    return None if cfg.teacher is None else fine_tune_init(stored_teacher(run), cfg.teacher.fine_tune)

