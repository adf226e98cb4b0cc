"""YOQO's crafted queries and every model's answers to them, as Ray tasks over (crafting set, example chunk).

The shadows are split into two crafting sets (seeded; `split` False: one set, all of them). Each set's queries are
crafted through its stacked weights (`attacks.compute.crafting.craft`, one task per example chunk) and cached
under `crafted/<key>/part-<first>-<stop>.parquet` (example_id, the crafted inputs; its sha256 and size beside it,
`farm.content.write_recorded`), keyed by a hash of the crafting settings and the set's model ids, so a re-run
crafts only missing chunks (and parts that differ from their record) and the inputs do not depend
on the chunking. Then each model labels the queries crafted by the set it is not in (a target: set 0's) through
a label oracle (`ModelOracle`; an audited target through its own oracle, journaled and budgeted), and its
statistic is the smoothed logit of the fraction answered with the true label; the shadows' margins on the same
queries come from their stacked weights (`attacks.compute.crafting.margins_of`, for score "margins"). No target's
weights or membership are ever read here: crafting reads the crafting set's weights and its rows of the membership
matrix only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import torch

from attacks.compute.crafting import CraftSettings, craft, margins_of
from attacks.compute.requery import audit_columns
from attacks.compute.tasks import map_tasks, task
from attacks.compute.whitebox import stacked
from attacks.methods.yoqo import FOLD, STATISTIC, check_settings, crafted_part
from attacks.responses import Responses
from attacks.stats.lira import smoothed_logit_fraction
from farm.cluster import ensure_ray
from farm.content import cached, write_recorded
from farm.plan import Plan
from farm.shards import fixed_list_to_numpy, load_weights
from farm.storage import RunDir, table_bytes
from farm.worker import hold_point

VERSION = 1  # of the crafting kernel: part of every cache key
# Examples are crafted in blocks of BLOCK consecutive example ids starting at multiples of BLOCK, whatever the
# chunking: floating-point sums depend on the batch shape, so a fixed block makes a crafted input bit-identical
# however the work is split (chunks are rounded up to whole blocks).
BLOCK = 64


def craft_settings(settings: dict) -> CraftSettings:
    """The crafting half of the attack's resolved `settings` (crafting "auto": "offline" for the offline variant,
    else "online")."""
    check_settings(settings)
    crafting = settings.get("crafting", "auto")
    if crafting == "auto":
        crafting = "offline" if settings["variant"] == "offline" else "online"
    return CraftSettings(variant=crafting,
                         steps=settings["steps"], lr=float(settings["lr"]), alpha=float(settings["alpha"]),
                         n_queries=settings["n_queries"])


def crafting_sets(shadows: Sequence[int], *, split: bool, seed: int) -> list[list[int]]:
    """The crafting sets: the shadows in two seeded halves (split), or all of them in one."""
    shadows = sorted(int(s) for s in shadows)
    if not split:
        return [shadows]
    order = np.random.default_rng([seed, 26]).permutation(shadows).tolist()
    return [sorted(order[: len(order) // 2]), sorted(order[len(order) // 2:])]


def answering_set(model: int, sets: list[list[int]]) -> int:
    """The crafting set whose queries `model` labels: the other set for a member of one, set 0 for a target (and
    for everyone when there is a single set)."""
    if len(sets) == 2:
        for index, members in enumerate(sets):
            if model in members:
                return 1 - index
    return 0


def _key(settings: CraftSettings, crafters: Sequence[int]) -> str:
    blob = json.dumps({**asdict(settings), "kernel": type(settings).__name__, "crafters": list(crafters),
                       "version": VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _part(key: str, start: int, stop: int) -> str:
    return f"crafted/{key}/part-{start:06d}-{stop:06d}.parquet"


def _craft_chunk(run_uri: str, plan_bits: tuple, crafters: list[int], member: np.ndarray, start: int,
                 x: np.ndarray, labels: np.ndarray, settings, key: str) -> str:
    """Craft examples [start, start + len(x)) through `crafters` (member bool[G, B]: their rows) and write them."""
    hold_point(f"crafting-{start:06d}")  # test hook: a test removes this task's node here
    torch.set_num_threads(1)
    run, (model_cfg, info) = RunDir(run_uri), plan_bits
    base, params, buffers = stacked(model_cfg, info, [load_weights(run, m) for m in crafters])
    x, y, member = torch.tensor(x), torch.tensor(np.asarray(labels, dtype=np.int64)), torch.tensor(member)
    out = np.concatenate([craft(base, params, buffers, x[b:b + BLOCK], y[b:b + BLOCK], member[:, b:b + BLOCK],
                                settings=settings, bounds=info.bounds).numpy() for b in range(0, len(x), BLOCK)])
    flat = out.reshape(len(x), -1)
    table = pa.table({"example_id": pa.array(np.arange(start, start + len(x), dtype=np.int32)),
                      "x": pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])})
    rel = _part(key, start, start + len(x))
    write_recorded(run, rel, table_bytes(table))
    return rel


_craft_task = task(_craft_chunk)


def crafted_inputs(plan: Plan, member: np.ndarray, crafters: Sequence[int], settings, *,
                   chunk_examples: int = 256, progress: bool = True, local: bool = False) -> np.ndarray:
    """float32[N, n_queries, *shape]: the queries crafted through `crafters` for every example of the population
    (member bool[M, N]: only the crafters' rows are read); missing chunks (`chunk_examples` rounded up to whole
    blocks) crafted as Ray tasks (local: here)."""
    data, crafters = plan.dataset, sorted(int(m) for m in crafters)
    key, n = _key(settings, crafters), len(data.y)
    chunk_examples = -(-chunk_examples // BLOCK) * BLOCK
    chunks = [(s, min(s + chunk_examples, n)) for s in range(0, n, chunk_examples)]
    todo = [c for c in chunks if not cached(plan.run, _part(key, *c))]
    bits = (plan.cfg.model, data.info)

    def args(start: int, stop: int) -> tuple:
        return (plan.run.uri, bits, crafters, np.ascontiguousarray(member[crafters, start:stop]), start,
                data.x[start:stop], data.y[start:stop], settings, key)

    if todo and local:
        for c in todo:
            _craft_chunk(*args(*c))
    elif todo:
        map_tasks(lambda c: _craft_task.remote(*args(*c)), todo, desc="crafting", unit="chunk", progress=progress)
    parts = [fixed_list_to_numpy(plan.run.read_table(_part(key, *c), columns=["x"])["x"]) for c in chunks]
    return np.concatenate(parts).reshape(n, settings.n_queries, *data.info.shape).astype(np.float32)


def statistic_of(answers: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float64[..., N]: the smoothed logit of the fraction of answers int[..., N, Q] equal to labels int[N]."""
    return smoothed_logit_fraction((answers == labels[:, None]).sum(-1), answers.shape[-1])


def ask(predict_labels, inputs: np.ndarray) -> np.ndarray:
    """int[N, Q]: labels of inputs float32[N, Q, *shape], every crafted input one query."""
    n, q = inputs.shape[:2]
    return np.asarray(predict_labels(inputs.reshape(n * q, *inputs.shape[2:]))).reshape(n, q)


def crafted_answers(plan: Plan, member: np.ndarray, crafting, *, split: bool, models: Sequence[int],
                    shadows: Sequence[int], seed: int, progress: bool,
                    local: bool) -> tuple[dict[int, np.ndarray], np.ndarray, list[np.ndarray], dict[int, np.ndarray]]:
    """({model: int[N, Q] its labels}, answering set float64[M, N], crafted inputs per set, {shadow: float[N, Q]
    its margins}): each of `models` labels, through a `ModelOracle`, the queries of the set it answers; the shadows'
    margins on them come from their stacked weights (`margins_of`). member bool[M, N]: only the shadows' rows are
    read (by the crafting); crafting: `CraftSettings` or `OsloSettings`."""
    from attacks.oracles.model import ModelOracle

    sets = crafting_sets(shadows, split=split, seed=seed)
    inputs = [crafted_inputs(plan, member, s, crafting, progress=progress, local=local) for s in sets]
    fold, answers = np.full(member.shape[:1] + (len(plan.dataset.y),), np.nan), {}
    for m in sorted(set(models)):
        fold[m] = answering_set(m, sets)
        answers[m] = ask(ModelOracle.from_run(plan.run, m).predict_labels, inputs[int(fold[m, 0])])
    margins = {}
    for index, crafted in enumerate(inputs):
        answering = [m for m in sorted(set(shadows)) if answering_set(m, sets) == index]
        if answering:
            stack = stacked(plan.cfg.model, plan.dataset.info, [load_weights(plan.run, m) for m in answering])
            margins.update(zip(answering, margins_of(*stack, crafted, plan.dataset.y), strict=True))
    return answers, fold, inputs, margins


def _statistic(plan: Plan, answers: dict[int, np.ndarray], margins: dict[int, np.ndarray], shape: tuple,
               names: tuple[str, str], columns=slice(None)) -> dict[str, np.ndarray]:
    """{names[0]: float64[M, N] the statistic of each answering model's labels on the queries `columns`,
    "<names[0]>_answers" and "<names[0]>_margins": float32[M, N, Q'] per query} (NaN where not computed; float32:
    two per-query arrays of a large run stay half the size)."""
    stat, right, margin = np.full(shape, np.nan), None, None
    for m, labels in answers.items():
        labels = labels[:, columns]
        stat[m] = statistic_of(labels, plan.dataset.y)
        right = np.full(shape + labels.shape[1:], np.nan, dtype=np.float32) if right is None else right
        right[m] = labels == plan.dataset.y[:, None]
    for m, values in margins.items():
        margin = np.full(shape + values[:, columns].shape[1:], np.nan, dtype=np.float32) if margin is None else margin
        margin[m] = values[:, columns]
    return {names[0]: stat, f"{names[0]}_answers": right, f"{names[0]}_margins": margin}


def _with(responses: Responses, statistics: dict[str, np.ndarray]) -> Responses:
    for name, values in statistics.items():
        if values is not None:
            responses = responses.with_statistic(name, values)
    return responses


def _statistics(plan: Plan, member: np.ndarray, crafting, *, split: bool, names: tuple[str, str],
                models: Sequence[int], shadows: Sequence[int], seed: int, progress: bool,
                local: bool) -> tuple[dict[str, np.ndarray], np.ndarray, list[np.ndarray]]:
    """(the statistics of `_statistic`, answering set, crafted inputs per set) of `crafted_answers` (NaN rows for
    the models not in `models`)."""
    answers, fold, inputs, margins = crafted_answers(plan, member, crafting, split=split, models=models,
                                                     shadows=shadows, seed=seed, progress=progress, local=local)
    return _statistic(plan, answers, margins, fold.shape, names), fold, inputs


def prepare_subsets(plan: Plan, responses: Responses, crafting, columns: Sequence[Sequence[int]], *, split: bool,
                    names: tuple[str, str], scored: Sequence[int], everyone: Sequence[int], seed: int,
                    progress: bool) -> list[Responses]:
    """`prepare_crafted` once for `crafting`, then one `responses` per entry of `columns`: the statistic of those
    of its queries only (the query-budget study: a point whose queries are a subset of a larger point's)."""
    answers, fold, _, margins = crafted_answers(plan, responses.member, crafting, split=split,
                                                models=sorted(set(scored) | set(everyone)), shadows=everyone,
                                                seed=seed, progress=progress, local=False)
    return [_with(responses, _statistic(plan, answers, margins, fold.shape, names, list(c)))
            .with_statistic(names[1], fold) for c in columns]


def prepare_points(plan: Plan, responses: Responses, points: Sequence[dict], *, scored: Sequence[int],
                   everyone: Sequence[int], seed: int, progress: bool) -> list[Responses]:
    """YOQO's statistic at each of `points` (resolved settings that differ in n_queries and score only;
    `Budgets.prepare`): the queries crafted once at the largest n_queries, whose descent checkpoints hold every
    smaller point's (a point whose checkpoints they do not hold, by rounding, is crafted on its own). The scoring
    settings (`SCORING`) change no preparation: every view holds what each score reads."""
    largest = crafted_part(max(points, key=lambda p: p["n_queries"]))
    kept = craft_settings(largest).checkpoints()
    subset = [{**crafted_part(p), "n_queries": largest["n_queries"]} == largest
              and set(craft_settings(p).checkpoints()) <= set(kept) for p in points]
    pairs = list(zip(points, subset, strict=True))
    columns = [[kept.index(k) for k in craft_settings(p).checkpoints()] for p, ok in pairs if ok]
    shared = iter(prepare_subsets(plan, responses, craft_settings(largest), columns, split=largest["split"],
                                  names=(STATISTIC, FOLD), scored=scored, everyone=everyone, seed=seed,
                                  progress=progress))
    return [next(shared) if ok else prepare(plan, responses, p, scored=scored, everyone=everyone, seed=seed,
                                            progress=progress, local=False) for p, ok in pairs]


def prepare_crafted(plan: Plan, responses: Responses, crafting, *, split: bool, names: tuple[str, str],
                    scored: Sequence[int], everyone: Sequence[int], seed: int, progress: bool,
                    local: bool) -> Responses:
    """`responses` with the statistic and answering set (`names`) of the `scored` models and `everyone` (the
    shadows, which craft and calibrate) on the queries `crafting` crafts."""
    stats, fold, _ = _statistics(plan, responses.member, crafting, split=split, names=names,
                                 models=sorted(set(scored) | set(everyone)), shadows=everyone, seed=seed,
                                 progress=progress, local=local)
    return _with(responses, stats).with_statistic(names[1], fold)


def audit_crafted(plan: Plan, responses: Responses, oracle, crafting, *, split: bool, names: tuple[str, str],
                  examples: np.ndarray, pseudo: Sequence[int], shadows: Sequence[int], seed: int,
                  progress: bool) -> Responses:
    """`prepare_crafted` for an audit: the shadows' rows on the challenge `examples` (and a disjoint run's shadow
    pool after them) and the target's, the last row of `responses`, from its answers through `oracle` to the
    queries crafted by set 0."""
    ensure_ray()
    target = responses.n_models - 1
    columns = audit_columns(plan, responses, examples)
    stats, fold, inputs = _statistics(plan, plan.member, crafting, split=split, names=names,
                                      models=sorted(set(shadows) | set(pseudo)), shadows=shadows, seed=seed,
                                      progress=progress, local=False)
    answers = ask(oracle.predict_labels, inputs[0][examples])
    target_rows = {names[0]: statistic_of(answers, plan.dataset.y[examples]),
                   f"{names[0]}_answers": answers == plan.dataset.y[examples][:, None]}
    for name, values in stats.items():  # the target's margins stay NaN: it gives labels only
        if values is None:
            continue
        out = np.full(responses.member.shape + values.shape[2:], np.nan, dtype=values.dtype)
        out[:target] = values[:, columns]
        if name in target_rows:
            out[target, :len(examples)] = target_rows[name]
        responses = responses.with_statistic(name, out)
    out_fold = np.full(responses.member.shape, np.nan)
    out_fold[:target], out_fold[target] = fold[:, columns], 0
    return responses.with_statistic(names[1], out_fold)


def prepare(plan: Plan, responses: Responses, chosen: dict, *, scored: Sequence[int], everyone: Sequence[int],
            seed: int, progress: bool, local: bool) -> Responses:
    """YOQO's `prepare_crafted`; chosen: the attack's resolved settings (`Statistic.prepare`)."""
    return prepare_crafted(plan, responses, craft_settings(chosen), split=chosen["split"], names=(STATISTIC, FOLD),
                           scored=scored, everyone=everyone, seed=seed, progress=progress, local=local)


def prepare_audit(plan: Plan, responses: Responses, oracle, chosen: dict, *, examples: np.ndarray,
                  pseudo: Sequence[int], shadows: Sequence[int], seed: int, progress: bool) -> Responses:
    """YOQO's `audit_crafted` (`Statistic.audit`)."""
    return audit_crafted(plan, responses, oracle, craft_settings(chosen), split=chosen["split"],
                         names=(STATISTIC, FOLD), examples=examples, pseudo=pseudo, shadows=shadows, seed=seed,
                         progress=progress)
