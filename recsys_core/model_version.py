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
from recsys_core.errors import InputError

FILM_WEIGHTS = "film_ae.pt"  # = training.artifacts.FILM_WEIGHTS
USER_WEIGHTS = "user_ae.pt"  # = training.artifacts.USER_WEIGHTS
CHUNK = 8 << 20


def version_string(ds: str, digest: hashlib._Hash) -> str:
    """``<ds>-<first 12 hex of the sha256 digest of the user-AE weight file>``: the one format."""
    return f"{ds}-{digest.hexdigest()[:12]}"


def model_version(model_dir: str, ds: str) -> str:
    """The version of the weights in ``model_dir`` (the model of ``ds``), read in chunks."""
    fs, inner = fs_swap.filesystem(f"{model_dir}/{USER_WEIGHTS}")
    digest = hashlib.sha256()
    with fs.open_input_stream(inner) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return version_string(ds, digest)


def current_model_version(model_dir: str, ds: str) -> str:
    """``model_version`` of ``models/ds=…``; InputError naming the missing weight file."""
    for name in (FILM_WEIGHTS, USER_WEIGHTS):
        if not fs_swap.exists(f"{model_dir}/{name}"):
            raise InputError(f"the model weights {model_dir}/{name} do not exist: re-run train, then score and "
                             f"check, for ds={ds}")  # fmt: skip
    return model_version(model_dir, ds)


def mismatch(ds: str, staged: object, current: str, what: str = "the staged rows") -> str:
    """The message when ``staged`` (a version, or several) is not the model now in ``models/``."""
    return (f"{what} of ds={ds} were scored by model {staged}, but models/ds={ds} now holds model {current} "
            f"(train ran again after score): re-run score, then check, for ds={ds}")  # fmt: skip
