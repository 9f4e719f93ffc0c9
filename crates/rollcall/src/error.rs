//! The crate's error type: every rejection names the problem, and all input
//! checks run before any GPU work is recorded.

/// Everything that rollcall can refuse or fail at. Input errors name the
/// offending row, index or value and are returned before any GPU work;
/// device errors (out of memory, validation, a lost device) are caught and
/// returned, never raised as panics.
///
/// ```
/// use rollcall::{sampling::cpu, Error, HostLogits, SamplingParams};
/// let err = cpu::sample(HostLogits::F32(&[0.0]), 1, &[SamplingParams::new(-1.0)]).unwrap_err();
/// assert!(matches!(err, Error::InvalidTemperature { row: 0, .. }));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No adapter matched the request (`WGPU_BACKEND`, `WGPU_ADAPTER_NAME`).
    #[error("no GPU adapter found ({0}); on a headless Linux machine install Mesa's lavapipe (`mesa-vulkan-drivers`)")]
    NoAdapter(String),
    /// The adapter refused to open a device.
    #[error("could not open a device on the adapter: {0}")]
    RequestDevice(String),
    /// The device ran out of memory while creating or running `what`.
    #[error("out of GPU memory ({what})")]
    OutOfMemory { what: &'static str },
    /// A buffer or binding larger than the device allows.
    #[error("{what} needs {bytes} bytes, more than the device allows ({limit} bytes)")]
    TooLarge {
        what: &'static str,
        bytes: u64,
        limit: u64,
    },
    /// The device reported an error (validation or internal).
    #[error("GPU device error: {0}")]
    Device(String),
    /// The device was lost (driver reset, unplugged GPU); a new context is needed.
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// A shader failed to compose (missing include): a bug in the crate.
    #[error("shader `{name}`: {reason}")]
    Shader { name: String, reason: String },
    /// A row's temperature is negative, NaN or infinite.
    #[error("row {row}: temperature must be finite and >= 0, got {value}")]
    InvalidTemperature { row: usize, value: f32 },
    /// A row's top_p is NaN or outside [0, 1].
    #[error("row {row}: top_p must be in [0, 1], got {value}")]
    InvalidTopP { row: usize, value: f32 },
    /// A row's min_p is NaN or outside [0, 1].
    #[error("row {row}: min_p must be in [0, 1], got {value}")]
    InvalidMinP { row: usize, value: f32 },
    /// A row's repetition, presence or frequency penalty is out of range
    /// (repetition finite and > 0; presence and frequency in [-2, 2]).
    #[error("row {row}: {name} must be {expected}, got {value}")]
    InvalidPenalty {
        row: usize,
        name: &'static str,
        expected: &'static str,
        value: f32,
    },
    /// A row's top-nσ is negative or not a number.
    #[error("row {row}: top_n_sigma must be finite and >= 0 (0 is off), got {value}")]
    InvalidTopNSigma { row: usize, value: f32 },
    /// A token id at or past the vocabulary (in a bias, history, stop list,
    /// allowed list or banned list).
    #[error("row {row}: {what} token {token} is out of range for a vocabulary of {vocab}")]
    TokenOutOfRange {
        row: usize,
        what: &'static str,
        token: u32,
        vocab: u32,
    },
    /// A logit bias is NaN (±inf is allowed: it forces or bans the token).
    #[error("row {row}: logit bias of token {token} is NaN")]
    InvalidBias { row: usize, token: u32 },
    /// A row's token history has no room for another distinct token.
    #[error(
        "row {row}: token history holds at most {capacity} distinct tokens; it would need {needed}"
    )]
    HistoryFull {
        row: usize,
        capacity: u32,
        needed: u64,
    },
    /// A token bitmask does not cover the vocabulary, or a row names a mask
    /// row that is not there.
    #[error("token mask: {0}")]
    InvalidMask(String),
    /// Draft tokens, lengths or distributions that do not fit the batch.
    #[error("speculative verification: {0}")]
    InvalidDrafts(String),
    /// More top log-probabilities than the sampler returns.
    #[error("top_logprobs must be at most {max}, got {requested}")]
    TooManyLogprobs { requested: u32, max: u32 },
    /// There must be one parameter set per row.
    #[error("expected {expected} parameter rows (one per logits row), got {got}")]
    ParamCountMismatch { expected: usize, got: usize },
    /// The host logits slice is not `rows * vocab` long.
    #[error("logits have {got} elements, expected rows x vocab = {expected}")]
    LogitsLengthMismatch { expected: usize, got: usize },
    /// The vocabulary must hold at least one token.
    #[error("vocab must be at least 1")]
    EmptyVocab,
    /// A buffer cannot hold what the call needs.
    #[error("{what} buffer too small: needs {needed} bytes, has {got}")]
    BufferTooSmall {
        what: &'static str,
        needed: u64,
        got: u64,
    },
    /// The logits offset inside the caller's buffer is not 4-byte aligned.
    #[error("logits offset {0} is not a multiple of 4 bytes")]
    MisalignedOffset(u64),
    /// More rows than a batch was created for.
    #[error("batch holds at most {capacity} rows, got {rows}")]
    BatchCapacity { capacity: usize, rows: usize },
    /// One row of logits is larger than the adapter can bind at once.
    #[error("one row is {row_bytes} bytes but the adapter binds at most {max_binding} bytes")]
    RowTooLarge { row_bytes: u64, max_binding: u64 },
    /// A segment is malformed: a round's vote segment naming a prompt out of
    /// range or twice, or past the round's answers; or reward offsets that
    /// decrease, overrun, or hold more than a segment may.
    #[error("segment {segment}: {reason}")]
    InvalidSegment { segment: usize, reason: String },
    /// A prompt index past the tables.
    #[error("prompt {prompt} out of range: the tables hold {prompts} prompts")]
    PromptOutOfRange { prompt: u32, prompts: u32 },
    /// An input slice of the wrong length.
    #[error("{what}: expected {expected} elements, got {got}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// An argument out of its range (named in the message).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A call that reads uploaded data came before any upload.
    #[error("{0}: nothing uploaded yet")]
    NothingUploaded(&'static str),
    /// Token counts must match the round's answers one for one.
    #[error("round has {answers} answers but {tokens} token counts")]
    TokensLengthMismatch { answers: usize, tokens: usize },
    /// Input data (a vote file) is malformed.
    #[error("data: {0}")]
    Data(String),
    /// A stopping rule's parameters are out of range.
    #[error("invalid stopping rule: {0}")]
    InvalidRule(String),
    /// Vote tables hold 1 to 256 distinct answers per prompt.
    #[error("vote table capacity must be 1 to 256, got {0}")]
    InvalidCapacity(u32),
    /// A tail estimator's parameters are out of range.
    #[error("invalid estimator: {0}")]
    InvalidEstimator(String),
    /// A reward is NaN (or infinite where an estimator needs finite rewards).
    #[error("reward {index} is {value}: rewards must be numbers (and finite for estimators)")]
    NonFiniteReward { index: usize, value: f32 },
    /// Reading results back from the device failed.
    #[error("GPU readback failed: {0}")]
    Readback(String),
}

/// Shorthand for `Result<T, rollcall::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
