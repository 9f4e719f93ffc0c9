"""Type stubs of the native module (re-exported by ``rollcall``)."""

from typing import Any, Dict, List, Literal, Optional, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt

__version__: str
MAX_ANSWER_ID: int

ArrayLike = npt.ArrayLike
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
Device = Literal["cpu", "gpu"]

class Rule:
    """A stopping rule with the budgets every prompt is held to."""

    def __init__(
        self, name: str, *, min_votes: int = 1, max_votes: int = 64, **params: float
    ) -> None: ...
    @staticmethod
    def from_spec(spec: str, *, min_votes: int = 1, max_votes: int = 64) -> Rule: ...
    @property
    def name(self) -> str: ...
    @property
    def params(self) -> Dict[str, float]: ...
    @property
    def min_votes(self) -> int: ...
    @property
    def max_votes(self) -> int: ...

def rules() -> Dict[str, Dict[str, float]]: ...
def describe_rules() -> Tuple[Tuple[str, str], ...]: ...

class Voter:
    """Incremental voting over a batch of prompts."""

    def __init__(
        self,
        prompts: int,
        rule: Union[Rule, str],
        *,
        capacity: int = 16,
        allocation: str = "chunk",
        chunk: int = 4,
        device: Device = "cpu",
    ) -> None: ...
    def feed(
        self, answers: ArrayLike, prompts: Optional[ArrayLike] = None
    ) -> Tuple[BoolArray, IntArray]: ...
    def request(self) -> Tuple[BoolArray, IntArray]: ...
    def table(self, prompt: int) -> Tuple[IntArray, IntArray]: ...
    @property
    def live(self) -> BoolArray: ...
    @property
    def requests(self) -> IntArray: ...
    @property
    def consensus(self) -> IntArray: ...
    @property
    def confidence(self) -> FloatArray: ...
    @property
    def votes(self) -> IntArray: ...
    @property
    def stopped_in_round(self) -> IntArray: ...
    @property
    def rounds(self) -> int: ...
    @property
    def done(self) -> bool: ...
    @property
    def prompts(self) -> int: ...
    @property
    def rule(self) -> Rule: ...
    @property
    def device(self) -> Device: ...

class ReplayResult(TypedDict):
    consensus: IntArray
    confidence: FloatArray
    votes: IntArray
    stopped_in_round: IntArray
    exhausted: BoolArray
    used: BoolArray
    rounds: int

def replay(
    answers: ArrayLike,
    rule: Union[Rule, str],
    *,
    capacity: int = 16,
    allocation: str = "chunk",
    chunk: int = 1,
    device: Device = "cpu",
) -> ReplayResult: ...
def _twin_replay(
    answers: ArrayLike,
    rule: Union[Rule, str],
    *,
    capacity: int = 16,
    allocation: str = "chunk",
    chunk: int = 1,
    device: Device = "cpu",
) -> Dict[str, Any]: ...
def majority_rewards(
    answers: ArrayLike, consensus: Optional[ArrayLike] = None, *, device: Device = "cpu"
) -> Tuple[FloatArray, IntArray]: ...
def grpo_advantages(
    scores: ArrayLike,
    index: Optional[ArrayLike] = None,
    *,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
    convention: str = "verl",
) -> FloatArray: ...

class TailEstimate(TypedDict):
    values: FloatArray
    advantages: FloatArray
    status: List[str]

def estimate(
    rewards: ArrayLike,
    estimator: str,
    *,
    n: Optional[int] = None,
    k: Optional[int] = None,
    alpha: float = 0.25,
    prefixes: int = 4,
    threshold: float = 0.5,
    eps: float = 1e-4,
    lengths: Optional[ArrayLike] = None,
    device: Device = "cpu",
) -> TailEstimate: ...
def pass_at_k(n: ArrayLike, c: ArrayLike, k: int) -> FloatArray: ...
def order(
    rewards: ArrayLike, *, lengths: Optional[ArrayLike] = None, device: Device = "cpu"
) -> Tuple[IntArray, FloatArray, IntArray]: ...
def top_k(
    rewards: ArrayLike,
    k: int,
    *,
    lengths: Optional[ArrayLike] = None,
    device: Device = "cpu",
) -> Tuple[FloatArray, IntArray]: ...
