//! Fetches the ONNX runtime and the default model from pinned, sha256-checked PyPI wheels into
//! project directories (`.runtime/`, `models/basic-pitch/`). Idempotent: a file that is present
//! with the right checksum is not fetched again. Nothing here runs at build time.

use crate::util::{have, root, run as exec};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One file taken out of a wheel.
struct Member {
    /// Path inside the wheel.
    inner: &'static str,
    /// Destination, relative to the workspace root.
    dest: &'static str,
    /// Expected sha256 of the extracted file; `None` for licence texts (the wheel is checked).
    sha256: Option<&'static str>,
}

/// A pinned wheel and what to take out of it.
struct Wheel {
    /// `pip` requirement, exact version.
    requirement: &'static str,
    /// File name prefix of the wheel pip saves (distribution name as pip normalises it).
    file_prefix: &'static str,
    /// sha256 of the whole wheel (cp311 manylinux_2_28 x86_64, or py3-none-any).
    sha256: &'static str,
    members: &'static [Member],
}

const ORT_CPU: Wheel = Wheel {
    requirement: "onnxruntime==1.31.1",
    file_prefix: "onnxruntime-1.31.1-",
    sha256: "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
    members: &[
        Member {
            inner: "onnxruntime/capi/libonnxruntime.so.1.31.1",
            dest: ".runtime/onnxruntime/libonnxruntime.so.1.31.1",
            sha256: Some("fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3"),
        },
        Member {
            inner: "onnxruntime/LICENSE",
            dest: ".runtime/onnxruntime/LICENSE",
            sha256: None,
        },
        Member {
            inner: "onnxruntime/ThirdPartyNotices.txt",
            dest: ".runtime/onnxruntime/ThirdPartyNotices.txt",
            sha256: None,
        },
    ],
};

const ORT_GPU: Wheel = Wheel {
    requirement: "onnxruntime-gpu==1.31.1",
    file_prefix: "onnxruntime_gpu-1.31.1-",
    sha256: "e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6",
    members: &[
        Member {
            inner: "onnxruntime/capi/libonnxruntime.so.1.31.1",
            dest: ".runtime/onnxruntime-gpu/libonnxruntime.so.1.31.1",
            sha256: Some("5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303"),
        },
        Member {
            inner: "onnxruntime/capi/libonnxruntime_providers_shared.so",
            dest: ".runtime/onnxruntime-gpu/libonnxruntime_providers_shared.so",
            sha256: Some("086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d"),
        },
        Member {
            inner: "onnxruntime/capi/libonnxruntime_providers_cuda.so",
            dest: ".runtime/onnxruntime-gpu/libonnxruntime_providers_cuda.so",
            sha256: Some("d5290158115fa5569a3fe8f1f4037ee9b0e86658a96e52f852bbb7039aa88137"),
        },
        Member {
            inner: "onnxruntime/LICENSE",
            dest: ".runtime/onnxruntime-gpu/LICENSE",
            sha256: None,
        },
    ],
};

const BASIC_PITCH: Wheel = Wheel {
    requirement: "basic-pitch==0.4.0",
    file_prefix: "basic_pitch-0.4.0-",
    sha256: "738adb503aae7fdfc7d1e1511aa0ce35052315f260a19531ef4c356708425db0",
    members: &[
        Member {
            inner: "basic_pitch/saved_models/icassp_2022/nmp.onnx",
            dest: "models/basic-pitch/nmp.onnx",
            sha256: Some("2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec"),
        },
        Member {
            inner: "basic_pitch-0.4.0.dist-info/LICENSE",
            dest: "models/basic-pitch/LICENSE",
            sha256: None,
        },
        Member {
            inner: "basic_pitch-0.4.0.dist-info/NOTICE",
            dest: "models/basic-pitch/NOTICE",
            sha256: None,
        },
    ],
};

/// Fetches the CPU runtime and Basic Pitch; with `gpu`, also the CUDA build of the runtime.
pub fn run(gpu: bool) -> Result<()> {
    let root = root();
    let mut wheels = vec![&ORT_CPU, &BASIC_PITCH];
    if gpu {
        wheels.push(&ORT_GPU);
    }
    for wheel in wheels {
        fetch(&root, wheel).with_context(|| format!("setting up {}", wheel.requirement))?;
    }
    if gpu {
        eprintln!(
            "xtask: the CUDA runtime needs the host's CUDA 13 (libcudart.so.13, libcublas.so.13, \
             libcurand.so.10, libcufft.so.12) and cuDNN 9 libraries on the loader path; \
             `trackmill doctor` says whether the CUDA execution provider registers"
        );
    }
    Ok(())
}

/// True when every member with a checksum is present and matches, and the others exist.
fn installed(root: &Path, wheel: &Wheel) -> Result<bool> {
    for m in wheel.members {
        let path = root.join(m.dest);
        if !path.is_file() {
            return Ok(false);
        }
        if let Some(want) = m.sha256 {
            if sha256_file(&path)? != want {
                eprintln!("xtask: {} has the wrong checksum, fetching again", m.dest);
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn fetch(root: &Path, wheel: &Wheel) -> Result<()> {
    if installed(root, wheel)? {
        eprintln!("xtask: {} already installed", wheel.requirement);
        return Ok(());
    }
    let python = python()?;
    let download = root.join(".runtime/download");
    fs::create_dir_all(&download)?;
    let wheel_path = match find_wheel(&download, wheel)? {
        Some(p) if sha256_file(&p)? == wheel.sha256 => p,
        _ => {
            eprintln!("xtask: downloading {} from PyPI", wheel.requirement);
            exec(
                Command::new(&python)
                    .args([
                        "-m",
                        "pip",
                        "download",
                        "--quiet",
                        "--no-deps",
                        "--only-binary=:all:",
                        "--python-version",
                        "3.11",
                        "--implementation",
                        "cp",
                        "--abi",
                        "cp311",
                        "--platform",
                        "manylinux_2_28_x86_64",
                        "--platform",
                        "manylinux_2_27_x86_64",
                        "--platform",
                        "manylinux_2_17_x86_64",
                        "--dest",
                    ])
                    .arg(&download)
                    .arg(wheel.requirement),
            )?;
            find_wheel(&download, wheel)?
                .with_context(|| format!("pip saved no wheel for {}", wheel.requirement))?
        }
    };
    let got = sha256_file(&wheel_path)?;
    if got != wheel.sha256 {
        bail!(
            "{} has sha256 {got}, expected {} (refusing to use it)",
            wheel_path.display(),
            wheel.sha256
        );
    }
    for m in wheel.members {
        let dest = root.join(m.dest);
        extract(&python, &wheel_path, m.inner, &dest)?;
        if let Some(want) = m.sha256 {
            let got = sha256_file(&dest)?;
            if got != want {
                let _ = fs::remove_file(&dest);
                bail!("{} has sha256 {got}, expected {want}", m.dest);
            }
        }
        eprintln!("xtask: installed {}", m.dest);
    }
    // The wheel is no longer needed once its members are in place and checked.
    fs::remove_file(&wheel_path).with_context(|| format!("removing {}", wheel_path.display()))?;
    Ok(())
}

fn find_wheel(dir: &Path, wheel: &Wheel) -> Result<Option<PathBuf>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(wheel.file_prefix) && name.ends_with(".whl") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Extracts one member of a wheel (a zip file) with Python's zipfile, through a temporary file
/// renamed into place so a half-written file never looks installed.
fn extract(python: &str, wheel: &Path, inner: &str, dest: &Path) -> Result<()> {
    let dir = dest.parent().context("destination has no parent")?;
    fs::create_dir_all(dir)?;
    let tmp = dest.with_extension("partial");
    const SCRIPT: &str = "import shutil, sys, zipfile\n\
        with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    \
        shutil.copyfileobj(src, dst)\n";
    exec(
        Command::new(python)
            .arg("-c")
            .arg(SCRIPT)
            .arg(wheel)
            .arg(inner)
            .arg(&tmp),
    )?;
    fs::rename(&tmp, dest).with_context(|| format!("installing {}", dest.display()))?;
    Ok(())
}

fn python() -> Result<String> {
    for p in ["python3", "python"] {
        if have(p) {
            return Ok(p.to_string());
        }
    }
    bail!("python3 with pip is needed to fetch the pinned wheels (apt-get install python3-pip)")
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>())
}
