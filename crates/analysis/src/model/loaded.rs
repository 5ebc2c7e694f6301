//! One loaded model: its session, input front end, and the pooling its manifest describes.

use crate::model::frontend::Frontend;
use crate::model::manifest::Manifest;
use crate::model::pooling::{normalize, Accumulator, Frames};
use crate::model::segments::Segment;
use crate::model::ModelError;
use ort::environment::Environment;
use ort::ep;
use ort::session::builder::SessionBuilder;
use ort::session::Session;
use ort::value::Tensor;

/// Which execution provider a session ended up on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    Cpu,
    Cuda,
}

impl Provider {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
        }
    }
}

pub(crate) struct LoadedModel {
    pub(crate) manifest: Manifest,
    session: Session,
    frontend: Frontend,
    pub(crate) provider: Provider,
}

/// What one model produced for one file.
pub(crate) struct Pooled {
    /// (embedding name, values)
    pub embeddings: Vec<(String, Vec<f32>)>,
    /// (label, score), best first.
    pub labels: Vec<(String, f32)>,
}

fn base_builder(env: &Environment, threads: usize) -> Result<SessionBuilder, String> {
    let s = |e: ort::Error<SessionBuilder>| e.to_string();
    Session::builder(env)
        .map_err(|e| e.to_string())?
        .with_intra_threads(threads.max(1))
        .map_err(s)?
        .with_inter_threads(1)
        .map_err(s)?
        .with_parallel_execution(false)
        .map_err(s)?
        .with_intra_op_spinning(false)
        .map_err(s)?
        .with_deterministic_compute(true)
        .map_err(s)
}

impl LoadedModel {
    /// Builds the session. With `gpu`, registers CUDA; `gpu_failed` receives the reason when
    /// that is impossible and the session runs on CPU instead.
    pub(crate) fn load(
        env: &Environment,
        manifest: Manifest,
        threads: usize,
        gpu: bool,
        gpu_failed: &mut Option<String>,
    ) -> Result<LoadedModel, ModelError> {
        let file = manifest.file_path();
        let name = manifest.name.clone();
        let err = |e: String| ModelError::ort(&name, e);
        let mut provider = Provider::Cpu;
        let mut session = None;
        if gpu && gpu_failed.is_none() {
            let cuda = base_builder(env, threads).and_then(|b| {
                b.with_execution_providers([ep::CUDA::default().build().error_on_failure()])
                    .map_err(|e| e.to_string())
            });
            match cuda.and_then(|mut b| b.commit_from_file(&file).map_err(|e| e.to_string())) {
                Ok(s) => {
                    session = Some(s);
                    provider = Provider::Cuda;
                }
                Err(e) => *gpu_failed = Some(e),
            }
        }
        let session = match session {
            Some(s) => s,
            None => base_builder(env, threads)
                .map_err(err)?
                .commit_from_file(&file)
                .map_err(|e| ModelError::ort(&name, e))?,
        };
        if !session
            .inputs()
            .iter()
            .any(|i| i.name() == manifest.input.name)
        {
            return Err(err(format!(
                "the model has no input {:?}",
                manifest.input.name
            )));
        }
        for o in &manifest.outputs {
            if !session.outputs().iter().any(|s| s.name() == o.name) {
                return Err(err(format!("the model has no output {:?}", o.name)));
            }
        }
        let frontend = Frontend::new(&manifest.input);
        Ok(LoadedModel {
            manifest,
            session,
            frontend,
            provider,
        })
    }

    /// Runs every window of every segment and pools the outputs.
    pub(crate) fn run(&mut self, segments: &[Segment]) -> Result<Pooled, ModelError> {
        let m = &self.manifest;
        let output_of = |id: &str| m.outputs.iter().find(|o| o.id == id);
        let mut parts: Vec<Vec<Accumulator>> = m
            .embeddings
            .iter()
            .map(|e| {
                e.parts
                    .iter()
                    .filter_map(|p| output_of(&p.from).map(|o| Accumulator::new(p, o)))
                    .collect()
            })
            .collect();
        let mut label_acc = m.labels.as_ref().and_then(|l| {
            let part = crate::model::manifest::PartSpec {
                from: l.from.clone(),
                reduce: l.reduce,
                threshold: 0.5,
                min_frames: 1,
                bin_offset: 0,
                fold: None,
            };
            output_of(&l.from).map(|o| Accumulator::new(&part, o))
        });
        let session = &mut self.session;
        let shape = self.frontend.shape.clone();
        let name = m.name.clone();
        for seg in segments {
            self.frontend.for_each_window(&seg.samples, |window| {
                let tensor = Tensor::from_array((shape.clone(), window.to_vec()))
                    .map_err(|e| ModelError::ort(&name, e))?;
                let outputs = session
                    .run(ort::inputs![m.input.name.as_str() => tensor])
                    .map_err(|e| ModelError::ort(&name, e))?;
                for spec in &m.outputs {
                    let (oshape, data) = outputs[spec.name.as_str()]
                        .try_extract_tensor::<f32>()
                        .map_err(|e| ModelError::ort(&name, e))?;
                    let frames = Frames::from_tensor(spec, oshape, data).map_err(|reason| {
                        ModelError::Shape {
                            model: name.clone(),
                            output: spec.name.clone(),
                            reason,
                        }
                    })?;
                    let accs = parts.iter_mut().flatten().chain(label_acc.as_mut());
                    for acc in accs.filter(|a| a.source() == spec.id) {
                        acc.add(&frames).map_err(|reason| ModelError::Shape {
                            model: name.clone(),
                            output: spec.name.clone(),
                            reason,
                        })?;
                    }
                }
                Ok::<(), ModelError>(())
            })?;
        }
        let embeddings = m
            .embeddings
            .iter()
            .zip(&parts)
            .map(|(e, accs)| {
                let mut v: Vec<f32> = accs.iter().flat_map(|a| a.finish()).collect();
                normalize(&mut v, e.normalize);
                (e.name.clone(), v)
            })
            .collect();
        let labels = match (&m.labels, &label_acc) {
            (Some(spec), Some(acc)) => {
                let scores = acc.finish();
                let mut ranked: Vec<(String, f32)> =
                    spec.names.iter().cloned().zip(scores).collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                ranked.truncate(spec.top_k);
                ranked
            }
            _ => Vec::new(),
        };
        Ok(Pooled { embeddings, labels })
    }

    /// Runs the model once on one raw window and returns one output tensor as (shape, values).
    pub(crate) fn run_raw(
        &mut self,
        window: &[f32],
        output: &str,
    ) -> Result<(Vec<i64>, Vec<f32>), ModelError> {
        let name = self.manifest.name.clone();
        let tensor = Tensor::from_array((self.frontend.shape.clone(), window.to_vec()))
            .map_err(|e| ModelError::ort(&name, e))?;
        let outputs = self
            .session
            .run(ort::inputs![self.manifest.input.name.as_str() => tensor])
            .map_err(|e| ModelError::ort(&name, e))?;
        let value = outputs
            .get(output)
            .ok_or_else(|| ModelError::ort(&name, format!("no output {output:?}")))?;
        let (shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| ModelError::ort(&name, e))?;
        Ok((shape.to_vec(), data.to_vec()))
    }
}
