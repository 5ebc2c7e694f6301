//! The set of models a worker loads once per process, and per-file inference.

use crate::model::checksum::sha256_file;
use crate::model::loaded::LoadedModel;
use crate::model::manifest::Manifest;
use crate::model::manifest::STREAM_RATE;
use crate::model::runtime::{self, RuntimeInfo};
use crate::model::segments::{Reservoir, SegmentCollector};
use crate::model::{ModelConfig, ModelError};
use trackmill_types::{CleanText, Embedding};

/// Loaded runtime and models.
pub struct ModelSet {
    models: Vec<LoadedModel>,
    runtime: RuntimeInfo,
    gpu_fallback: Option<String>,
}

/// A label a model gave the track, with its pooled score.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelLabel {
    pub model: CleanText,
    pub label: CleanText,
    pub score: f32,
}

/// What the models produced for one file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelOutput {
    /// One per manifest embedding, named `<model>/<embedding>`.
    pub embeddings: Vec<Embedding>,
    /// Pitch-class profile (C first, sums to 1) for key refinement, when a model gives one.
    pub pitch_class_profile: Option<[f32; 12]>,
    /// Top labels of models that declare `[labels]`.
    pub labels: Vec<ModelLabel>,
    /// Seconds of audio the models were run on, all models together.
    pub audio_seen_s: f64,
}

impl ModelSet {
    /// Loads the runtime and every enabled model once. A missing runtime, manifest or model
    /// file is `ModelError::Missing`: the caller runs DSP-only analysis and says so once.
    pub fn load(cfg: &ModelConfig) -> Result<ModelSet, ModelError> {
        let lib = cfg.resolve_runtime()?;
        let mut manifests = Vec::with_capacity(cfg.enabled.len());
        for name in &cfg.enabled {
            let m = Manifest::load(&cfg.manifest_path(name))?;
            let file = m.file_path();
            if !file.is_file() {
                return Err(ModelError::Missing {
                    what: format!("model file of {name}"),
                    path: file,
                });
            }
            let got = sha256_file(&file).map_err(|e| ModelError::Manifest {
                path: file.clone(),
                reason: e.to_string(),
            })?;
            if !got.eq_ignore_ascii_case(&m.sha256) {
                return Err(ModelError::Checksum {
                    path: file,
                    expected: m.sha256.clone(),
                    got,
                });
            }
            manifests.push(m);
        }
        let (env, info) = runtime::load(&lib)?;
        let mut gpu_fallback = None;
        let mut models = Vec::with_capacity(manifests.len());
        for m in manifests {
            models.push(LoadedModel::load(
                &env,
                m,
                cfg.intra_threads,
                cfg.gpu,
                &mut gpu_fallback,
            )?);
        }
        if let Some(reason) = &gpu_fallback {
            tracing::warn!(
                "analysis.gpu is set but the CUDA execution provider could not be registered; \
                 models run on CPU ({})",
                reason.lines().next().unwrap_or(reason)
            );
        }
        Ok(ModelSet {
            models,
            runtime: info,
            gpu_fallback,
        })
    }

    /// A per-file collector implementing `MonoSink` that keeps only the segments the manifests
    /// ask for (bounded memory).
    pub fn collector(&self) -> SegmentCollector {
        SegmentCollector::new(
            self.models
                .iter()
                .map(|m| {
                    Reservoir::new(&m.manifest.segments, m.manifest.input.samples_per_window())
                })
                .collect(),
        )
    }

    /// Runs the models on what was collected. A file too short to give any audio gives no
    /// embeddings.
    pub fn infer(&mut self, c: SegmentCollector) -> Result<ModelOutput, ModelError> {
        let mut out = ModelOutput::default();
        for (model, reservoir) in self.models.iter_mut().zip(c.reservoirs) {
            let segments = reservoir.finish();
            if segments.is_empty() {
                continue;
            }
            let samples: usize = segments.iter().map(|s| s.samples.len()).sum();
            out.audio_seen_s += samples as f64 / f64::from(STREAM_RATE);
            let pooled = model.run(&segments)?;
            let name = model.manifest.name.clone();
            for (emb, values) in pooled.embeddings {
                if model.manifest.key_profile.as_deref() == Some(emb.as_str())
                    && out.pitch_class_profile.is_none()
                {
                    if let Ok(p) = <[f32; 12]>::try_from(values.as_slice()) {
                        if p.iter().any(|&v| v > 0.0) {
                            out.pitch_class_profile = Some(p);
                        }
                    }
                }
                out.embeddings.push(Embedding {
                    model: CleanText::new(&format!("{name}/{emb}")),
                    values,
                });
            }
            out.labels
                .extend(pooled.labels.into_iter().map(|(label, score)| ModelLabel {
                    model: CleanText::new(&name),
                    label: CleanText::new(&label),
                    score,
                }));
        }
        Ok(out)
    }

    /// Runs `model` once on one input window (already in the model's input layout) and returns
    /// `output` as (shape, values). Used for parity checks against other runtimes.
    pub fn run_window(
        &mut self,
        model: &str,
        window: &[f32],
        output: &str,
    ) -> Result<(Vec<i64>, Vec<f32>), ModelError> {
        let m = self
            .models
            .iter_mut()
            .find(|m| m.manifest.name == model)
            .ok_or_else(|| ModelError::ort(model, "not loaded"))?;
        m.run_raw(window, output)
    }

    /// The loaded runtime.
    pub fn runtime(&self) -> &RuntimeInfo {
        &self.runtime
    }

    /// Names of the loaded models, in load order.
    pub fn model_names(&self) -> Vec<&str> {
        self.models
            .iter()
            .map(|m| m.manifest.name.as_str())
            .collect()
    }

    /// "cuda" when every session runs on CUDA, else "cpu".
    pub fn execution_provider(&self) -> &'static str {
        if !self.models.is_empty() && self.models.iter().all(|m| m.provider.as_str() == "cuda") {
            "cuda"
        } else {
            "cpu"
        }
    }

    /// Why CUDA was not used although it was asked for (already logged once).
    pub fn gpu_fallback(&self) -> Option<&str> {
        self.gpu_fallback.as_deref()
    }
}
