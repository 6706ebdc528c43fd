"""Commands on a bundle and the deployment targets: ``verify``, ``build-engine``, ``prepare-engine``, ``profiles``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeseg.cli.app import JsonFlag, app, exit_code, print_json, user_errors
from edgeseg.errors import VerificationError


@app.command("verify")
@user_errors
def verify_cmd(bundle: Path = typer.Argument(..., help="Bundle directory."),
               expect_digest: Optional[str] = typer.Option(None, help="Refuse unless the manifest digest is this "
                                                                      "(sha256 obtained out of band, e.g. from the release)."),
               json_out: JsonFlag = False):
    """Check a bundle the way every loader does (docs/bundle.md): the manifest's schema and its own digest,
    every listed file (inside the bundle, regular, sha256), self-contained ONNX, embedded preprocessing and
    labels equal to the manifest's. Exit 3 on a failed file or a manifest whose digest does not match, 2 on an
    unusable manifest."""
    from edgeseg.bundle import read_manifest, unlisted_files, verify_bundle

    manifest = read_manifest(bundle, expect_digest)
    problems = verify_bundle(bundle)
    for p in problems:
        typer.echo(f"FAIL {p}", err=True)
    n = sum(len(a["hashes"]) for a in manifest["artifacts"]) + len(manifest.get("extra_hashes", {}))
    unlisted = unlisted_files(bundle, manifest, "manifest.json") if not problems else []
    if json_out:
        print_json({"bundle": str(bundle), "ok": not problems, "manifest_sha256": manifest["manifest_sha256"],
                    "artifacts": [a["name"] for a in manifest["artifacts"]], "files": n, "problems": problems,
                    "unlisted": unlisted})
    if problems:
        raise typer.Exit(exit_code(VerificationError))
    if json_out:
        return
    typer.echo(f"OK {bundle}: {n} files in {len(manifest['artifacts'])} artifacts match their sha256; "
               f"manifest digest sha256:{manifest['manifest_sha256']}")
    if unlisted:
        typer.echo(f"note: {len(unlisted)} file(s) in the folder are not part of the bundle and never read "
                   f"(e.g. {unlisted[0]})")


@app.command("build-engine")
@user_errors
def build_engine_cmd(bundle: Path = typer.Argument(..., help="Bundle directory."),
                     artifact: Optional[str] = typer.Option(None, help="Only this TensorRT artifact.")):
    """Build TensorRT engines for this GPU from the bundle's TensorRT ONNX (run it on the deployment device)."""
    from edgeseg.targets.tensorrt import build_bundle_engines

    for name, path in build_bundle_engines(bundle, artifact):
        typer.echo(f"built {name}: {path}")


@app.command("prepare-engine")
@user_errors
def prepare_engine_cmd(bundle: Path = typer.Argument(..., help="Bundle directory (verified first)."),
                       cache: Path = typer.Option(..., help="Engine cache folder (e.g. a volume that outlives the container)."),
                       artifact: Optional[str] = typer.Option(None, help="The TensorRT artifact (default: the bundle's first).")):
    """Build (first start) or reuse the TensorRT engine for this device in CACHE; prints its path."""
    from edgeseg.bundle import load_bundle
    from edgeseg.targets.tensorrt import ensure_engine, tensorrt_artifacts

    engine, built = ensure_engine(bundle, tensorrt_artifacts(load_bundle(bundle), bundle, artifact)[0], cache)
    typer.echo(f"{'built' if built else 'reused'} {engine}")


@app.command("profiles")
@user_errors
def profiles_cmd(json_out: JsonFlag = False):
    """List the target profiles (``export/*.toml``)."""
    from edgeseg.targets import list_profiles, load_profile

    profiles = {name: load_profile(name) for name in list_profiles()}
    if json_out:
        print_json([{"name": name, "target": p.target, "precision": p.precision, "description": p.description}
                    for name, p in profiles.items()])
        return
    for name, p in profiles.items():
        typer.echo(f"{name:28s} {p.target:12s} {p.precision:5s} {p.description}")
