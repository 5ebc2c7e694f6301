//! The analysis engine a worker owns for its lifetime: calls the analysis crate for one file,
//! turning panics and errors into classified failures.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use trackmill_analysis::{analyze_file, Options};
use trackmill_types::{Failure, FailureClass, Outcome, Stage, StageTimes};

/// What the engine needs to know; built from the worker's command line.
#[derive(Clone, Debug, Default)]
pub struct EngineConfig {
    pub analysis: AnalysisSettings,
}

#[derive(Clone, Debug)]
pub struct AnalysisSettings {
    pub analysis_rate: u32,
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        AnalysisSettings {
            analysis_rate: Options::default().analysis_rate,
        }
    }
}

pub struct Engine {
    opts: Options,
}

impl Engine {
    pub fn new(cfg: &EngineConfig) -> Self {
        let opts = Options {
            analysis_rate: cfg.analysis.analysis_rate,
            ..Options::default()
        };
        Engine { opts }
    }

    /// Analyses one file. Never panics: a panic inside the analysis becomes a crash-class failure
    /// of stage `decode` (the analysis crate already catches decoder panics as corrupt).
    pub fn analyse(&mut self, path: &Path) -> (Outcome, StageTimes, f64) {
        match catch_unwind(AssertUnwindSafe(|| analyze_file(path, &self.opts))) {
            Ok(Ok(a)) => {
                let audio_s = a.analysis.audio.decoded_s;
                (Outcome::Analysed(Box::new(a.analysis)), a.stages, audio_s)
            }
            Ok(Err(e)) => (Outcome::Failed(e.to_failure()), StageTimes::default(), 0.0),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                let f = Failure::new(
                    FailureClass::Corrupt,
                    Stage::Decode,
                    format!("analysis panicked: {msg}"),
                );
                (Outcome::Failed(f), StageTimes::default(), 0.0)
            }
        }
    }
}
