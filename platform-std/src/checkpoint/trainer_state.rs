//! `trainer_state.json`: step, RNG words, data position, run configuration.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::{json_bytes, read_json, CkptError};
use crate::fsutil::write_atomic;

/// Value of `"format"` in `trainer_state.json`.
pub const TRAINER_STATE_FORMAT: &str = "cllm-trainer-state";
/// Version of the `trainer_state.json` layout.
pub const TRAINER_STATE_VERSION: u64 = 1;

/// Everything besides weights and optimizer moments needed to continue a run
/// exactly.
///
/// `u64` values are stored as decimal strings so that no JSON reader
/// (JavaScript, some Python tools) rounds them through an f64.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: u64,
    /// RNG state words.
    pub rng_state: Vec<u64>,
    /// Position in the data stream (with hash-selected batches this is the
    /// step whose batch comes next; stored for other schemes and checks).
    pub data_position: u64,
    /// Training wall time so far, seconds (for metrics continuity).
    pub elapsed_s: f64,
    /// The run's full configuration, as the trainer defines it.
    pub config: Value,
}

impl TrainerState {
    /// The JSON document written to `trainer_state.json`.
    pub fn to_json(&self) -> Value {
        json!({
            "format": TRAINER_STATE_FORMAT,
            "version": TRAINER_STATE_VERSION,
            "step": self.step.to_string(),
            "data_position": self.data_position.to_string(),
            "rng_state": self.rng_state.iter().map(u64::to_string).collect::<Vec<_>>(),
            "elapsed_s": self.elapsed_s,
            "config": self.config,
        })
    }

    /// Parses and validates the document. `path` is for messages.
    pub fn from_json(path: &Path, doc: &Value) -> Result<Self, CkptError> {
        let field_err = |field: &str, reason: String| CkptError::Field {
            path: path.to_path_buf(),
            field: field.to_string(),
            reason,
        };
        let obj: &Map<String, Value> = doc
            .as_object()
            .ok_or_else(|| field_err("(top level)", "must be a JSON object".to_string()))?;
        match obj.get("format").and_then(Value::as_str) {
            Some(TRAINER_STATE_FORMAT) => {}
            _ => {
                return Err(field_err(
                    "format",
                    format!("must be \"{TRAINER_STATE_FORMAT}\""),
                ))
            }
        }
        match obj.get("version").and_then(Value::as_u64) {
            Some(TRAINER_STATE_VERSION) => {}
            _ => {
                return Err(field_err(
                    "version",
                    format!(
                        "is {}, this build reads version {TRAINER_STATE_VERSION}",
                        obj.get("version").unwrap_or(&Value::Null)
                    ),
                ))
            }
        }
        let parse_u64 = |field: &str, v: Option<&Value>| -> Result<u64, CkptError> {
            match v {
                Some(Value::String(s)) if !s.starts_with('+') => s
                    .parse::<u64>()
                    .map_err(|_| field_err(field, format!("{s:?} is not a u64 decimal"))),
                Some(other) => Err(field_err(
                    field,
                    format!("must be a u64 as a decimal string, got {other}"),
                )),
                None => Err(field_err(field, "is missing".to_string())),
            }
        };
        let step = parse_u64("step", obj.get("step"))?;
        let data_position = parse_u64("data_position", obj.get("data_position"))?;
        let words = obj
            .get("rng_state")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                field_err(
                    "rng_state",
                    "must be an array of decimal strings".to_string(),
                )
            })?;
        let rng_state = words
            .iter()
            .enumerate()
            .map(|(i, w)| parse_u64(&format!("rng_state[{i}]"), Some(w)))
            .collect::<Result<Vec<_>, _>>()?;
        let elapsed_s = match obj.get("elapsed_s").and_then(Value::as_f64) {
            Some(e) if e.is_finite() && e >= 0.0 => e,
            _ => {
                return Err(field_err(
                    "elapsed_s",
                    "must be a non-negative number of seconds".to_string(),
                ))
            }
        };
        let config = obj
            .get("config")
            .cloned()
            .ok_or_else(|| field_err("config", "is missing".to_string()))?;
        Ok(TrainerState {
            step,
            rng_state,
            data_position,
            elapsed_s,
            config,
        })
    }
}

/// Writes `trainer_state.json` atomically.
pub fn write_trainer_state(path: &Path, state: &TrainerState) -> Result<(), CkptError> {
    Ok(write_atomic(path, &json_bytes(&state.to_json()))?)
}

/// Reads and validates `trainer_state.json`.
pub fn read_trainer_state(path: &Path) -> Result<TrainerState, CkptError> {
    let doc = read_json(path)?;
    TrainerState::from_json(path, &doc)
}
