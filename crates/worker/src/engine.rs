//! The analysis engine a worker owns for its lifetime: the models it loaded once, and per file the
//! DSP analysis, the model stage on the segments the manifests select, and key refinement, with
//! panics and errors turned into classified failures.

use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;
use trackmill_analysis::model::{refine_key, ModelConfig, ModelSet};
use trackmill_analysis::{analyze_open_with, Analyzed, NullSink, Options};
use trackmill_types::{CleanText, Failure, FailureClass, Outcome, Stage, StageTimes};

/// What the engine needs to know; built from the worker's command line.
#[derive(Clone, Debug, Default)]
pub struct EngineConfig {
    pub analysis: AnalysisSettings,
    /// Models to load once and run on every file; `None` for DSP-only analysis.
    pub models: Option<ModelConfig>,
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
    models: Option<ModelSet>,
    /// Why configured models are not running in this worker (noted on every result).
    models_off: Option<String>,
    /// Set after a model failure: the worker should exit once it has replied, so that the next
    /// attempt gets a fresh runtime (arenas cleared).
    recycle: bool,
}

/// What failed in one file: the analysis itself, or the model stage after a good analysis.
enum StageError {
    Analysis(Failure),
    Model(Failure),
}

impl Engine {
    /// Builds the engine and loads the configured models. A model set that cannot be loaded
    /// leaves this worker DSP-only (the supervisor already checked the models once with a probe
    /// worker, so this is rare and each result carries a note saying so).
    pub fn new(cfg: &EngineConfig) -> Self {
        let opts = Options {
            analysis_rate: cfg.analysis.analysis_rate,
            ..Options::default()
        };
        let (models, models_off) = match &cfg.models {
            None => (None, None),
            Some(mc) => match ModelSet::load(mc) {
                Ok(set) => (Some(set), None),
                Err(e) => {
                    tracing::warn!("models not loaded; this worker analyses DSP-only: {e}");
                    (None, Some(e.to_string()))
                }
            },
        };
        Engine {
            opts,
            models,
            models_off,
            recycle: false,
        }
    }

    /// Names of the models this worker runs.
    pub fn model_names(&self) -> Vec<String> {
        self.models.as_ref().map_or_else(Vec::new, |m| {
            m.model_names().into_iter().map(String::from).collect()
        })
    }

    /// True once a model failure asked for a fresh worker.
    pub fn wants_recycle(&self) -> bool {
        self.recycle
    }

    /// Analyses one file, opened once with [`trackmill_analysis::open_input`] (`len` as it
    /// returned). Never panics: a panic inside the analysis becomes a corrupt-class failure of
    /// stage `decode` (the analysis crate already catches decoder panics as corrupt). A model
    /// failure fails the file with the model's class (oom for an allocation failure in the
    /// runtime) and asks for a recycle.
    pub fn analyze(&mut self, file: File, len: u64) -> (Outcome, StageTimes, f64) {
        let opts = &self.opts;
        let models = &mut self.models;
        let result = catch_unwind(AssertUnwindSafe(|| {
            analyze_one(file, len, opts, models.as_mut())
        }));
        match result {
            Ok(Ok(mut a)) => {
                if let Some(why) = &self.models_off {
                    a.analysis
                        .notes
                        .push(CleanText::new(&format!("model stage skipped: {why}")));
                }
                let audio_s = a.analysis.audio.decoded_s;
                (Outcome::Analyzed(Box::new(a.analysis)), a.stages, audio_s)
            }
            Ok(Err(StageError::Analysis(f))) => (Outcome::Failed(f), StageTimes::default(), 0.0),
            Ok(Err(StageError::Model(f))) => {
                self.recycle = true;
                (Outcome::Failed(f), StageTimes::default(), 0.0)
            }
            Err(panic) => {
                let msg = trackmill_types::panic_message(&*panic);
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

/// DSP analysis with the segment collector as the mono sink, then the model stage: embeddings
/// appended after the DSP fingerprint, key refined with the pitch-class profile.
fn analyze_one(
    file: File,
    len: u64,
    opts: &Options,
    models: Option<&mut ModelSet>,
) -> Result<Analyzed, StageError> {
    let Some(set) = models else {
        return analyze_open_with(file, len, opts, &mut NullSink)
            .map_err(|e| StageError::Analysis(e.to_failure()));
    };
    let mut collector = set.collector();
    let mut a = analyze_open_with(file, len, opts, &mut collector)
        .map_err(|e| StageError::Analysis(e.to_failure()))?;
    let t = Instant::now();
    // An allocation failure in the runtime is oom-class (retried by policy in a fresh worker);
    // the failure carries the runtime's message, so nothing is logged here.
    let out = set
        .infer(collector)
        .map_err(|e| StageError::Model(e.to_failure()))?;
    a.stages.model_us += u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
    if let (Some(profile), Some(features)) = (&out.pitch_class_profile, &mut a.analysis.features) {
        refine_key(features, profile);
    }
    a.analysis.embeddings.extend(out.embeddings);
    a.analysis.models = set.model_names().into_iter().map(CleanText::new).collect();
    Ok(a)
}
