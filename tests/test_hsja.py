"""Batched HopSkipJump against a multinomial linear classifier, whose distance to the boundary is known exactly."""

import numpy as np
import pytest

from attacks.compute.hsja import hopskipjump
from farm.errors import ConfigError, DataError

D, CLASSES = 20, 3


class LinearModel:
    """argmax(x W + b) in numpy; records the rows of every call and checks probes stay within `bounds`.

    Scores are per-row sums over the last axis (no BLAS), so a row's label never depends on its batch."""

    def __init__(self, seed: int = 0, bounds: tuple[float, float] = (0.0, 1.0)):
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=(D, CLASSES))
        self.b = -0.5 * self.w.sum(axis=0)  # classes balanced around the centre of the box
        self.bounds, self.calls = bounds, []

    def scores(self, x: np.ndarray) -> np.ndarray:
        return (x.astype(np.float64)[:, None, :] * self.w.T[None]).sum(-1) + self.b

    def predict_labels(self, x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == D
        assert x.min() >= self.bounds[0] and x.max() <= self.bounds[1], "probe outside bounds"
        self.calls.append(len(x))
        return self.scores(x).argmax(axis=1)


def l2_distance_to_linear_boundary(w: np.ndarray, b: np.ndarray, x: np.ndarray, label: np.ndarray):
    """Exact L2 distance float64[N] from x[N, d] (labelled `label` int[N]) to the closest point labelled otherwise.

    The class's region is a convex polytope, so that distance is the one to its nearest facet's hyperplane:
    min over j != y of (s_y - s_j) / ||w_y - w_j||. Also returns, per class j, the distance float64[N, C] to
    hyperplane j (inf for j = y) and its foot float64[N, C, d] (the point of hyperplane j closest to x)."""
    s = x @ w + b
    rows = np.arange(len(x))
    facet = np.full((len(x), w.shape[1]), np.inf)
    foot = np.zeros((len(x), w.shape[1], x.shape[1]))
    for j in range(w.shape[1]):
        other = label != j
        normal = w[:, label[other]].T - w[:, j]  # [n, d]
        norm = np.linalg.norm(normal, axis=1)
        facet[other, j] = (s[rows[other], label[other]] - s[other, j]) / norm
        foot[other, j] = x[other] - (facet[other, j] / norm)[:, None] * normal
    return facet.min(axis=1), facet, foot


@pytest.fixture(scope="module")
def geometry():
    """2000 points in [0.2, 0.8]^20 labelled as the model labels them, with their facet distances.

    HopSkipJump is a local method: on a polytope, every facet foot that lies on the facet (no third class
    wins there) and in the box is a local minimum of the distance along the boundary, and HSJA converges to
    the one its random start leads to. `local` marks, per point and class, those local minima."""
    model = LinearModel()
    x = np.random.default_rng(1).uniform(0.2, 0.8, size=(2000, D)).astype(np.float32)
    labels = model.scores(x).argmax(axis=1)
    exact, facet, foot = l2_distance_to_linear_boundary(model.w, model.b, x.astype(np.float64), labels)
    scores = foot @ model.w + model.b  # [N, C, C]
    on_facet = scores[np.arange(len(x)), :, labels] >= scores.max(axis=2) - 1e-9
    in_box = (foot.min(axis=2) >= 0) & (foot.max(axis=2) <= 1)
    local = np.isfinite(facet) & on_facet & in_box
    nearest_in_box = in_box[np.arange(len(x)), facet.argmin(axis=1)] & (exact > 0.01)
    return x, labels, exact, np.where(local, facet, np.inf), nearest_in_box


@pytest.fixture(scope="module")
def problem(geometry):
    """100 points whose nearest boundary point lies inside the box [0, 1]^20 (some with other local minima)."""
    x, labels, exact, _, nearest_in_box = geometry
    keep = np.flatnonzero(nearest_in_box)[:100]
    return x[keep], labels[keep], exact[keep]


def _attack_points(geometry, keep, **settings):
    x, labels, exact, local, _ = geometry
    result = hopskipjump(LinearModel().predict_labels, x[keep], labels[keep], seed=0, **settings)
    assert result.success.all()
    assert (result.distance / exact[keep]).min() > 1 - 1e-4  # reported points are adversarial: never too close
    to_local = np.abs(result.distance[:, None] / local[keep] - 1).min(axis=1)
    return result.distance / exact[keep], to_local


def test_exact_distance_where_the_nearest_facet_is_the_only_local_minimum(geometry):
    _, _, _, local, nearest_in_box = geometry
    keep = np.flatnonzero(nearest_in_box & (np.isfinite(local).sum(axis=1) == 1))[:100]
    assert len(keep) == 100
    ratio, _ = _attack_points(geometry, keep, max_iter=20, max_evals=1000)
    assert (ratio <= 1.05).sum() >= 95, np.sort(ratio)[-10:]  # 99-100 over seeds 0-9
    assert np.median(ratio) < 1.01


def test_a_local_minimum_where_there_are_several(geometry):
    """HSJA converges to the facet its random start leads to: every distance is one of the local minima."""
    keep = np.flatnonzero(geometry[4])[:100]
    ratio, to_local = _attack_points(geometry, keep, max_iter=20, max_evals=1000)
    assert (to_local < 0.05).sum() >= 98, np.sort(to_local)[-5:]  # 99-100 over seeds 0-9
    assert (ratio <= 1.05).sum() >= 70  # most starts lead to the nearest facet: 79-89 over seeds 0-9


@pytest.mark.parametrize("budget", [None, 500, 50])
def test_every_query_counted_and_budget_respected(problem, budget):
    x, labels, _ = problem
    model = LinearModel()
    result = hopskipjump(model.predict_labels, x, labels, max_iter=8, budget=budget, chunk_size=1000)
    assert sum(model.calls) == result.queries.sum()
    assert max(model.calls) <= 1000
    assert result.queries.dtype == np.int32 and result.distance.dtype == np.float32
    if budget is not None:
        assert result.queries.max() <= budget
    if budget == 500:  # iterations cost 108, 150, 182, 209, ...: three fit after the start (~10)
        assert result.queries.min() > 300
    assert result.success.all()


def test_same_seed_same_result_whatever_the_batch_or_chunking(problem):
    x, labels, _ = problem
    whole = hopskipjump(LinearModel().predict_labels, x, labels, max_iter=5, seed=3)
    parts = [hopskipjump(LinearModel().predict_labels, x[i::4], labels[i::4], max_iter=5, seed=3,
                         example_ids=np.arange(len(x))[i::4]) for i in range(4)]
    for i, part in enumerate(parts):
        np.testing.assert_array_equal(part.distance, whole.distance[i::4])
        np.testing.assert_array_equal(part.queries, whole.queries[i::4])
    small = hopskipjump(LinearModel().predict_labels, x, labels, max_iter=5, seed=3, chunk_size=64)
    np.testing.assert_array_equal(small.distance, whole.distance)
    np.testing.assert_array_equal(small.queries, whole.queries)
    other = hopskipjump(LinearModel().predict_labels, x, labels, max_iter=5, seed=4)
    assert not np.array_equal(other.distance, whole.distance)


def test_misclassified_examples_cost_one_query(problem):
    x, labels, _ = problem
    wrong = labels.copy()
    wrong[:10] = (labels[:10] + 1) % CLASSES
    result = hopskipjump(LinearModel().predict_labels, x, wrong, max_iter=2)
    assert (result.distance[:10] == 0).all() and (result.queries[:10] == 1).all() and result.success[:10].all()
    assert (result.distance[10:] > 0).all() and (result.queries[10:] > 1).all()


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 2.0)])
def test_probes_stay_within_bounds(problem, bounds):
    x, labels, exact = problem
    model = LinearModel(bounds=bounds)  # asserts on every probe
    result = hopskipjump(model.predict_labels, x[:20], labels[:20], bounds=bounds, max_iter=5)
    assert result.success.all() and (result.distance >= exact[:20] * (1 - 1e-4)).all()


def test_no_adversarial_start_gives_domain_diameter():
    x = np.full((3, 4, 2), 0.5, dtype=np.float32)  # any input shape: flattened internally (d = 8)
    constant = lambda batch: np.zeros(len(batch), dtype=np.int64)
    result = hopskipjump(constant, x, np.zeros(3, dtype=np.int64), bounds=(-1.0, 1.0))
    assert not result.success.any()
    np.testing.assert_allclose(result.distance, np.sqrt(8) * 2.0)
    assert (result.queries == 1 + 100).all()  # clean query + every random start


def test_with_a_model_oracle():
    """Image-shaped inputs through `ModelOracle.predict_labels`: its count is the sum of the per-example counts."""
    torch = pytest.importorskip("torch")
    from attacks.oracles.model import ModelOracle

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    oracle = ModelOracle(model, input_shape=(1, 8, 8))
    x = np.random.default_rng(0).uniform(0, 1, size=(6, 1, 8, 8)).astype(np.float32)
    labels = oracle.predict_labels(x)
    oracle.reset_count()
    result = hopskipjump(oracle.predict_labels, x, labels, max_iter=3, budget=400, chunk_size=100)
    assert oracle.queries_used == result.queries.sum() and result.queries.max() <= 400
    assert (result.distance[result.success] > 0).all()


def test_bad_arguments_are_specific_errors(problem):
    x, labels, _ = problem
    predict = LinearModel().predict_labels
    with pytest.raises(DataError, match="bounds"):
        hopskipjump(predict, x + 1.0, labels)
    with pytest.raises(DataError, match="labels"):
        hopskipjump(predict, x, labels[:-1])
    with pytest.raises(ConfigError, match="budget"):
        hopskipjump(predict, x, labels, budget=0)
    with pytest.raises(ConfigError, match="bounds"):
        hopskipjump(predict, x, labels, bounds=(1.0, 0.0))
    with pytest.raises(DataError, match="answered"):
        hopskipjump(lambda batch: np.zeros((len(batch), 2)), x, labels)


def test_binary_linear_classifier_distances_within_five_percent():
    """A binary linear classifier: one hyperplane, exact distance |w.x + b| / ||w|| (acceptance, issue 4)."""
    rng = np.random.default_rng(5)
    w = rng.normal(size=D)
    b = -0.5 * w.sum()
    x = rng.uniform(0.25, 0.75, size=(400, D))
    exact = np.abs(x @ w + b) / np.linalg.norm(w)
    foot = x - ((x @ w + b) / (w @ w))[:, None] * w
    keep = np.flatnonzero((foot.min(1) >= 0) & (foot.max(1) <= 1) & (exact > 0.01))[:100]
    assert len(keep) == 100
    x, exact = x[keep].astype(np.float32), exact[keep]
    predict = lambda rows: ((rows.astype(np.float64) * w).sum(1) + b > 0).astype(np.int64)  # noqa: E731
    result = hopskipjump(predict, x, predict(x), max_iter=20, init_evals=100, max_evals=1000, seed=0)
    ratio = result.distance / exact
    assert (np.abs(ratio - 1) <= 0.05).sum() >= 95, np.sort(ratio)[-10:]
