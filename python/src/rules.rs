//! Stopping rules by name: one table of names, parameters and defaults, so a
//! new rule is one more entry.

use crate::{error, rollcall_error};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use rollcall::voting::calibrated::CalibratedRounds;
use rollcall::voting::{RuleConfig, StopRule};

/// A rule's entry: its name, other names, parameters with defaults, and the
/// constructor from the parameters (in the listed order).
struct Spec {
    name: &'static str,
    aliases: &'static [&'static str],
    params: &'static [(&'static str, f64)],
    build: fn(&[f64]) -> StopRule,
    summary: &'static str,
}

const SPECS: &[Spec] = &[
    Spec {
        name: "fixed",
        aliases: &["fixed-budget"],
        params: &[],
        build: |_| StopRule::FixedBudget,
        summary: "stop only at max_votes (TTRL's fixed budget)",
    },
    Spec {
        name: "beta",
        aliases: &["ac-beta"],
        params: &[("threshold", 0.95), ("prior", 1.0)],
        build: |p| StopRule::Beta {
            threshold: p[0] as f32,
            prior: p[1] as f32,
        },
        summary: "P(p_leader > p_runner_up) under Beta(v_L + prior, v_S + prior) >= threshold (Adaptive-Consistency)",
    },
    Spec {
        name: "dirichlet",
        aliases: &[],
        params: &[("threshold", 0.95), ("prior", 1.0), ("top", 5.0)],
        build: |p| StopRule::Dirichlet {
            threshold: p[0] as f32,
            prior: p[1] as f32,
            top: p[2] as u32,
        },
        summary: "the leader is the mode under Dirichlet(v + prior) over the top answers (exact 1-D integral, no Monte Carlo)",
    },
    Spec {
        name: "optpo",
        aliases: &[],
        params: &[
            ("p0", 0.6),
            ("hypotheses", 0.0),
            ("delta", 0.05),
            ("alpha", 0.05),
            ("beta", 0.05),
        ],
        build: |p| StopRule::OptPo {
            p0: p[0] as f32,
            hypotheses: p[1] as u32,
            delta: p[2] as f32,
            alpha: p[3] as f32,
            beta: p[4] as f32,
        },
        summary: "OptPO's sequential ratio test (hypotheses 0: the answers seen)",
    },
    Spec {
        name: "consol-sprt",
        aliases: &["sprt"],
        params: &[
            ("p0", 0.5),
            ("p1", 0.5001),
            ("alpha", 0.05),
            ("beta", 1.0 - 0.05 - 0.000024),
        ],
        build: |p| StopRule::ConsolSprt {
            p0: p[0],
            p1: p[1],
            alpha: p[2],
            beta: p[3],
        },
        summary: "ConSol's SPRT on leader against runner-up votes (defaults: a lead of 3)",
    },
    Spec {
        name: "margin",
        aliases: &[],
        params: &[("votes", 3.0)],
        build: |p| StopRule::margin(p[0] as u32),
        summary: "ConSol's SPRT set to stop when the leader leads by `votes`",
    },
    Spec {
        name: "consol-msprt",
        aliases: &["msprt"],
        params: &[
            ("prior", 1.0e6),
            ("alpha", 0.05),
            ("beta", 1.0 - 0.05 - 0.00006),
        ],
        build: |p| StopRule::ConsolMsprt {
            prior: p[0] as f32,
            alpha: p[1],
            beta: p[2],
        },
        summary: "ConSol's mixture SPRT",
    },
    Spec {
        name: "esc",
        aliases: &[],
        params: &[("window", 5.0)],
        build: |p| StopRule::EscWindow {
            window: p[0] as u32,
        },
        summary: "ESC: every vote of the newest complete window agrees",
    },
    Spec {
        name: "majority",
        aliases: &[],
        params: &[("share", 0.8)],
        build: |p| StopRule::Majority { share: p[0] as f32 },
        summary: "the leader's share of the votes >= share (n >= 2)",
    },
    Spec {
        name: "entropy",
        aliases: &[],
        params: &[("max_normalized", 0.75)],
        build: |p| StopRule::Entropy {
            max_normalized: p[0] as f32,
        },
        summary: "normalised entropy of the answer counts <= max_normalized (n >= 2)",
    },
    Spec {
        name: "calibrated",
        aliases: &[],
        params: &[("delta", 0.01)],
        build: |p| StopRule::Calibrated {
            delta: p[0] as f32,
        },
        summary: "stop once P(the leader is not the majority at max_votes) <= delta, under a prior learned from the whole batch every round; at two votes only if the batch agrees often enough to bound 2-0 flips by delta (max_votes <= 64)",
    },
    Spec {
        name: "predictive",
        aliases: &[],
        params: &[("prior", 0.3), ("delta", 0.01)],
        build: |p| StopRule::Predictive {
            prior: p[0] as f32,
            delta: p[1] as f32,
        },
        summary: "risk that the runner-up ends ahead at max_votes <= delta (Beta-Binomial)",
    },
];

/// Parameters that must be whole numbers (cast to u32).
const INTEGER_PARAMS: &[&str] = &["top", "hypotheses", "window", "votes"];

fn find(name: &str) -> Option<&'static Spec> {
    SPECS
        .iter()
        .find(|s| s.name == name || s.aliases.contains(&name))
}

/// A stopping rule with the budgets every prompt is held to.
///
/// `Rule(name, *, min_votes=1, max_votes=64, **params)`: `name` is one of
/// `rollcall.rules()` (aliases: "ac-beta", "sprt", "msprt", "fixed-budget");
/// params override the rule's defaults. `Rule.from_spec("beta:0.9:0.5")`
/// takes the command line's spelling (parameters in order after colons).
/// Raises `InvalidRuleError` for unknown names, parameters or values out of
/// range.
#[pyclass(module = "rollcall", frozen)]
#[derive(Clone)]
pub(crate) struct Rule {
    pub(crate) name: &'static str,
    pub(crate) values: Vec<f64>,
    pub(crate) config: RuleConfig,
}

impl Rule {
    pub(crate) fn build(
        py: Python<'_>,
        name: &str,
        min_votes: u32,
        max_votes: u32,
        given: &[(String, f64)],
    ) -> PyResult<Self> {
        let spec = match find(name) {
            Some(spec) => spec,
            None => {
                let known: Vec<&str> = SPECS.iter().map(|s| s.name).collect();
                return Err(error(
                    py,
                    "InvalidRuleError",
                    format!("unknown rule {name:?}; known rules: {}", known.join(", ")),
                ));
            }
        };
        let mut values: Vec<f64> = spec.params.iter().map(|p| p.1).collect();
        for (key, value) in given {
            let Some(i) = spec.params.iter().position(|p| p.0 == key) else {
                let names: Vec<&str> = spec.params.iter().map(|p| p.0).collect();
                return Err(error(
                    py,
                    "InvalidRuleError",
                    format!(
                        "rule {:?} has no parameter {key:?}; its parameters: [{}]",
                        spec.name,
                        names.join(", ")
                    ),
                ));
            };
            if INTEGER_PARAMS.contains(&key.as_str())
                && !(value.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(value))
            {
                return Err(error(
                    py,
                    "InvalidRuleError",
                    format!(
                        "rule {:?}: {key} must be a whole number >= 0, got {value}",
                        spec.name
                    ),
                ));
            }
            values[i] = *value;
        }
        let config = RuleConfig {
            rule: (spec.build)(&values),
            min_votes,
            max_votes,
        };
        match config.rule {
            // Validated with the batch state it needs.
            StopRule::Calibrated { .. } => CalibratedRounds::new(&config).map(|_| ()),
            _ => config.validate(),
        }
        .map_err(|e| rollcall_error(py, e))?;
        Ok(Rule {
            name: spec.name,
            values,
            config,
        })
    }

    fn spec(&self) -> &'static Spec {
        find(self.name).expect("a built rule has a spec")
    }
}

/// Reads `**params` values as floats (bool is refused: it is never meant).
fn read_params(py: Python<'_>, params: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, f64)>> {
    let mut out = Vec::new();
    if let Some(dict) = params {
        for (k, v) in dict.iter() {
            let key: String = k.extract()?;
            let value: f64 = if v.is_instance_of::<pyo3::types::PyBool>() {
                Err(())
            } else {
                v.extract::<f64>().map_err(|_| ())
            }
            .map_err(|_| {
                error(
                    py,
                    "DTypeError",
                    format!(
                        "rule parameter {key} must be a number, got {}",
                        v.repr().map(|r| r.to_string()).unwrap_or_default()
                    ),
                )
            })?;
            out.push((key, value));
        }
    }
    Ok(out)
}

#[pymethods]
impl Rule {
    #[new]
    #[pyo3(signature = (name, *, min_votes = 1, max_votes = 64, **params))]
    fn new(
        py: Python<'_>,
        name: &str,
        min_votes: u32,
        max_votes: u32,
        params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let given = read_params(py, params)?;
        Rule::build(py, name, min_votes, max_votes, &given)
    }

    /// A rule from the command line's spelling: `NAME[:P1[:P2...]]`, the
    /// parameters in the order `rollcall.rules()[NAME]` lists them.
    #[staticmethod]
    #[pyo3(signature = (spec, *, min_votes = 1, max_votes = 64))]
    fn from_spec(py: Python<'_>, spec: &str, min_votes: u32, max_votes: u32) -> PyResult<Self> {
        let mut parts = spec.split(':');
        let name = parts.next().unwrap_or("");
        let values: Vec<&str> = parts.collect();
        let params = find(name).map(|s| s.params).unwrap_or(&[]);
        if values.len() > params.len() && find(name).is_some() {
            return Err(error(
                py,
                "InvalidRuleError",
                format!(
                    "rule {name:?} takes at most {} parameters, got {spec:?}",
                    params.len()
                ),
            ));
        }
        let mut given = Vec::new();
        for (v, p) in values.iter().zip(params) {
            let value: f64 = v.parse().map_err(|_| {
                error(
                    py,
                    "InvalidRuleError",
                    format!("rule spec {spec:?}: {v:?} is not a number"),
                )
            })?;
            given.push((p.0.to_string(), value));
        }
        Rule::build(py, name, min_votes, max_votes, &given)
    }

    /// The rule's name (aliases resolved).
    #[getter]
    fn name(&self) -> &'static str {
        self.name
    }

    /// The rule's parameters, defaults filled in.
    #[getter]
    fn params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for ((key, _), value) in self.spec().params.iter().zip(&self.values) {
            if INTEGER_PARAMS.contains(key) {
                d.set_item(key, *value as u64)?;
            } else {
                d.set_item(key, *value)?;
            }
        }
        Ok(d)
    }

    /// Votes before the rule may stop a prompt.
    #[getter]
    fn min_votes(&self) -> u32 {
        self.config.min_votes
    }

    /// Votes at which a prompt stops whatever the rule says.
    #[getter]
    fn max_votes(&self) -> u32 {
        self.config.max_votes
    }

    pub(crate) fn __repr__(&self) -> String {
        let params: Vec<String> = self
            .spec()
            .params
            .iter()
            .zip(&self.values)
            .map(|((k, _), v)| format!(", {k}={v}"))
            .collect();
        format!(
            "Rule({:?}, min_votes={}, max_votes={}{})",
            self.name,
            self.config.min_votes,
            self.config.max_votes,
            params.concat()
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<Rule>()
            .map(|o| {
                let o = o.get();
                o.name == self.name && o.config == self.config
            })
            .unwrap_or(false)
    }
}

/// Accepts a `Rule` or a rule name (defaults, budgets 1 to 64).
pub(crate) fn rule_arg(py: Python<'_>, rule: &Bound<'_, PyAny>) -> PyResult<Rule> {
    if let Ok(r) = rule.cast::<Rule>() {
        return Ok(r.get().clone());
    }
    if let Ok(name) = rule.extract::<String>() {
        return Rule::from_spec(py, &name, 1, 64);
    }
    Err(error(
        py,
        "DTypeError",
        "rule must be a rollcall.Rule or a rule name such as \"beta\"",
    ))
}

/// The stopping rules by name: `{name: {parameter: default}}`.
#[pyfunction]
fn rules(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let out = PyDict::new(py);
    for spec in SPECS {
        let d = PyDict::new(py);
        for (k, v) in spec.params {
            if INTEGER_PARAMS.contains(k) {
                d.set_item(k, *v as u64)?;
            } else {
                d.set_item(k, *v)?;
            }
        }
        out.set_item(spec.name, d)?;
    }
    Ok(out)
}

/// One line per rule: `(name, summary)`.
#[pyfunction]
fn describe_rules(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
    let items: Vec<(String, String)> = SPECS
        .iter()
        .map(|s| (s.name.to_string(), s.summary.to_string()))
        .collect();
    PyTuple::new(py, items)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Rule>()?;
    m.add_function(wrap_pyfunction!(rules, m)?)?;
    m.add_function(wrap_pyfunction!(describe_rules, m)?)?;
    Ok(())
}
