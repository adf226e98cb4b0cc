"""The farm driver: train a run's missing models on a pool of Ray trainer actors, then check every shard.

`train_farm(plan)` opens the run directory (`farm.plan.open_run`), hands only the missing groups of models
(`farm.verify.missing_models`) to a `TrainerPool`, and validates the shards trained now. The pool keeps at
most `IN_FLIGHT_PER_ACTOR` groups queued per actor, takes results in completion order, and replaces an
actor that dies once Ray's own restarts are spent, retrying its groups first. Actor resources and the
cluster checks live in `farm.cluster`; the plan in `farm.plan`.
"""

from __future__ import annotations

import sys

import ray
from tqdm.auto import tqdm

from farm.cluster import actor_config, actor_options, ensure_ray, n_actors, warn_if_not_shared
from farm.errors import RunError
from farm.lock import run_lock
from farm.plan import Plan, open_run, refuse_foreign
from farm.verify import missing_models, verify_plan
from farm.worker import TrainerActor

IN_FLIGHT_PER_ACTOR = 2


class TrainerPool:
    """Trainer actors and the groups of models they train.

    Every actor holds the population once (object refs it fetches itself) and has at most
    IN_FLIGHT_PER_ACTOR groups queued; `next_finished` takes results in completion order; `replace`
    swaps a dead actor for a new one and queues its groups again, the failed group first.
    """

    def __init__(self, plan: Plan, groups: list[list[int]], n: int):
        cfg = plan.cfg
        self.max_retries = cfg.farm.max_retries
        self.shared = dict(run_uri=plan.run.uri, cfg=actor_config(cfg), info=plan.dataset.info, queries=plan.queries)
        # kept alive for the whole farm; handed to the actors with each group (farm.worker.TrainerActor._load)
        self.arrays = [ray.put(plan.dataset.x), ray.put(plan.dataset.y), ray.put(plan.member)]
        self.options = actor_options(cfg)
        self.actors = [self._new_actor() for _ in range(n)]
        self.queue = list(reversed(groups))  # pop() hands out the next group
        self.pending: dict = {}  # object ref -> (actor, group, whether the actor was known restarted then)
        self.deaths: dict = {}  # tuple(group) -> how often its actor died training it
        self.restarted: set = set()  # actors Ray restarted (their node or process was lost), as far as known
        self.retried: list[list[int]] = []  # groups trained again after their actor died (`retried_lines`)

    @property
    def busy(self) -> bool:
        return bool(self.pending)

    def _new_actor(self):
        return TrainerActor.options(**self.options).remote(**self.shared)

    def _submit(self, actor) -> None:
        group = self.queue.pop()
        self.pending[actor.train.remote(group, self.arrays)] = (actor, group, actor in self.restarted)

    def _in_flight(self, actor) -> int:
        return sum(a is actor for a, _, _ in self.pending.values())

    def start(self) -> None:
        """Hand the actors their first groups, one round over the actors at a time."""
        for _ in range(IN_FLIGHT_PER_ACTOR):
            for actor in self.actors:
                if self.queue:
                    self._submit(actor)

    def next_finished(self) -> tuple:
        """(actor, group, None) for the next group done; (actor, group, error) when its actor died."""
        [ref], _ = ray.wait(list(self.pending), num_returns=1)
        actor, group, known = self.pending.pop(ref)
        try:
            done = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            return actor, group, exc
        if done["restarted"] and not known:  # sent to the actor before Ray restarted it: Ray retried the group
            self.restarted.add(actor)
            self.retried.append(group)
        return actor, group, None

    def replace(self, actor, group: list[int], death: Exception):
        """A new actor in place of the dead `actor` (Ray's restarts and retries are spent): its queued groups
        go back to the queue, `group` first. RunError once `group` has died more than farm.max_retries times."""
        key = tuple(group)
        self.deaths[key] = self.deaths.get(key, 0) + 1
        if self.deaths[key] > self.max_retries:
            raise RunError(f"models {group}: their trainer actor died {self.deaths[key]} times "
                           f"(farm.max_retries={self.max_retries}): {str(death).splitlines()[0]}; "
                           "re-run the same command to resume") from death
        ray.kill(actor, no_restart=True)
        replacement = self._new_actor()
        self.actors[self.actors.index(actor)] = replacement
        for ref, (owner, queued, _) in list(self.pending.items()):
            if owner is actor:  # its other queued group died with it
                self.pending.pop(ref)
                self.queue.append(queued)
                self.retried.append(queued)
        self.queue.append(group)
        self.retried.append(group)
        return replacement

    def refill(self, actor) -> None:
        """Queue groups on `actor` until it has IN_FLIGHT_PER_ACTOR (or none are left)."""
        while self.queue and self._in_flight(actor) < IN_FLIGHT_PER_ACTOR:
            self._submit(actor)

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)


def train_farm(plan: Plan, *, progress: bool = True) -> list[int]:
    """Train every missing model of the run, holding its writer lock (`farm.lock`); returns the model ids
    trained now."""
    refuse_foreign(plan.run)  # before the lock writes its file there
    with run_lock(plan.run, command="train", create=True):
        open_run(plan)
        for name in plan.run.listdir("models"):  # a shard's temporary folder left by a killed writer
            if name.startswith(".") and name.endswith((".tmp", ".old")):
                plan.run.delete(f"models/{name}")
        todo = missing_models(plan)
        if todo:
            _dispatch(plan, todo, progress=progress)
        problems = verify_plan(plan, models=todo)  # the others passed the same checks in missing_models just now
    if problems:
        raise RunError(f"{len(problems)} bad shard(s) after training: " + "; ".join(problems[:5]))
    return todo


def _dispatch(plan: Plan, todo: list[int], *, progress: bool) -> None:
    """Train the models `todo` in groups of farm.group_size on a TrainerPool, with a progress bar."""
    ensure_ray()
    warn_if_not_shared(plan.run)
    size = plan.cfg.farm.group_size
    groups = [todo[i : i + size] for i in range(0, len(todo), size)]
    pool = TrainerPool(plan, groups, n_actors(plan.cfg, len(groups)))
    bar = tqdm(total=len(todo), desc="models", unit="model", disable=not progress, smoothing=0.1)
    pool.start()
    try:
        while pool.busy:
            actor, group, death = pool.next_finished()
            if death is None:
                bar.update(len(group))
            else:
                actor = pool.replace(actor, group, death)
            pool.refill(actor)
    finally:
        bar.close()
        pool.close()
    for group in pool.retried:
        print(f"farm: models {group[0]}-{group[-1]} were trained again: their trainer actor died (its node or "
              "worker process was lost) and was restarted", file=sys.stderr)
