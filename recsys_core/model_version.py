"""Which model a table was scored by, and whether that model is still the one in ``models/``.

``model_version`` is ``<ds of the model>-<first 12 hex of sha256 of the user-AE weights>``
(the score job stamps it on every row). The quality gate and publish recompute it from
``models/ds=…/`` so that rows scored by a model that has since been re-trained or removed
are never published with another model's validation metrics. No torch here: publish
only hashes files.
"""

from __future__ import annotations

import hashlib

from recsys_core import fs_swap
from recsys_core.errors import CorruptFile, InputError

FILM_WEIGHTS = "film_ae.pt"  # = training.artifacts.FILM_WEIGHTS
USER_WEIGHTS = "user_ae.pt"  # = training.artifacts.USER_WEIGHTS
CHUNK = 8 << 20
DIGESTS = "weights_sha256"  # manifest key: {file name: sha256 hex of its bytes at training time}


def version_string(ds: str, sha256_hex: str) -> str:
    """``<ds>-<first 12 hex of the sha256 of the user-AE weight file>``: the one format."""
    return f"{ds}-{sha256_hex[:12]}"


def file_digest(path: str) -> hashlib._Hash:
    """sha256 of a file's bytes, read in chunks (any pyarrow filesystem)."""
    fs, inner = fs_swap.filesystem(path)
    digest = hashlib.sha256()
    with fs.open_input_stream(inner) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest


def check_recorded_digest(path: str, digest_hex: str, manifest: dict, ds: str | None = None) -> None:
    """CorruptFile when the manifest recorded another sha256 for ``path`` at training time.

    A checkpoint whose bytes changed after training (bit rot, a partial copy) may still
    load, with wrong weights; the digest catches it. Manifests without digests pass.
    """
    recorded = (manifest.get(DIGESTS) or {}).get(path.rsplit("/", 1)[-1])
    if recorded is not None and recorded != digest_hex:
        when = f" for ds={ds}" if ds else " for that date"
        raise CorruptFile(f"{path}: damaged model checkpoint (its sha256 is not the one recorded in the model "
                          f"manifest at training time): re-run the train job{when}, then score and check")  # fmt: skip


def model_version(model_dir: str, ds: str) -> str:
    """The version of the weights in ``model_dir`` (the model of ``ds``)."""
    return version_string(ds, file_digest(f"{model_dir}/{USER_WEIGHTS}").hexdigest())


def current_model_version(model_dir: str, ds: str) -> str:
    """``model_version`` of ``models/ds=…``; InputError naming the missing weight file."""
    for name in (FILM_WEIGHTS, USER_WEIGHTS):
        if not fs_swap.exists(f"{model_dir}/{name}"):
            raise InputError(f"the model weights {model_dir}/{name} do not exist: re-run train, then score and "
                             f"check, for ds={ds}")  # fmt: skip
    try:
        manifest = fs_swap.read_json(f"{model_dir}/manifest.json")
    except (FileNotFoundError, ValueError):
        manifest = {}  # a missing or unreadable manifest is reported where it is read
    digests = {name: file_digest(f"{model_dir}/{name}") for name in (FILM_WEIGHTS, USER_WEIGHTS)}
    for name, digest in digests.items():
        check_recorded_digest(f"{model_dir}/{name}", digest.hexdigest(), manifest, ds)
    return version_string(ds, digests[USER_WEIGHTS].hexdigest())


def mismatch(ds: str, staged: object, current: str, what: str = "the staged rows") -> str:
    """The message when ``staged`` (a version, or several) is not the model now in ``models/``."""
    return (f"{what} of ds={ds} were scored by model {staged}, but models/ds={ds} now holds model {current} "
            f"(train ran again after score): re-run score, then check, for ds={ds}")  # fmt: skip
