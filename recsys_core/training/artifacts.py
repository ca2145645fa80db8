"""Model and embedding artifacts: ``models/ds=…/`` and ``embeddings/ds=…/{users,films}``.

Both are written to a hidden staging sibling and swapped in, so a reader never sees a
half-written partition and a failed run leaves the previous one in place. Weights are
state dicts saved by ``torch.save`` and read back with ``weights_only=True`` (no pickled
code). The manifest records the vocabulary hashes of the features the model was trained
on; loading against features with other vocabularies raises ``VocabularyMismatch``.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recsys_core.data.vocab import VocabularyMismatch
from recsys_core.errors import InputError, reading
from recsys_core.fs_swap import filesystem as _fs
from recsys_core.fs_swap import publish_dir as _publish
from recsys_core.model_version import DIGESTS, check_recorded_digest
from recsys_core.models.film_ae import FilmAE, FilmAEConfig
from recsys_core.models.user_ae import UserAE, UserAEConfig

FILM_WEIGHTS = "film_ae.pt"
USER_WEIGHTS = "user_ae.pt"
MANIFEST = "manifest.json"
EMBEDDINGS_MODEL = "_model.json"  # in embeddings/ds=…: the model_version the embeddings come from
# The hashes a model depends on: film_idx order (scores, decoder rows), and the film-AE
# input layout (genre and genome tag order).
CHECKED_VOCABULARIES = ("films", "genres", "genome_tags")


# ---------------------------------------------------------------- filesystem helpers


def _write_bytes(path: str, data: bytes) -> None:
    fs, inner = _fs(path)
    with fs.open_output_stream(inner) as f:
        f.write(data)


def _read_bytes(path: str) -> bytes:
    fs, inner = _fs(path)
    with fs.open_input_stream(inner) as f:
        return f.read()


# ---------------------------------------------------------------- models


def _state_bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def save_models(directory: str, film_model: FilmAE, user_model: UserAE, manifest: dict) -> None:
    """Publish both state dicts and ``manifest.json`` (which must hold ``vocabulary`` and ``dims``)."""
    for key in ("vocabulary", "dims", "config"):
        if key not in manifest:
            raise ValueError(f"model manifest needs {key!r}")

    weights = {FILM_WEIGHTS: _state_bytes(film_model), USER_WEIGHTS: _state_bytes(user_model)}
    manifest[DIGESTS] = {name: hashlib.sha256(data).hexdigest() for name, data in weights.items()}

    def write(staging: str) -> None:
        for name, data in weights.items():
            _write_bytes(f"{staging}/{name}", data)
        _write_bytes(f"{staging}/{MANIFEST}", json.dumps(manifest, indent=2, sort_keys=True).encode())

    _publish(directory, write)


def model_dims(film_model: FilmAE, user_model: UserAE) -> dict:
    return {
        "n_films": user_model.n_films,
        "n_genome": film_model.n_genome,
        "n_genres": film_model.n_genres,
        "n_numeric": film_model.n_numeric,
        "film_content_dim": int(user_model.film_content.shape[1]),
    }


def check_vocabulary(model_manifest: dict, features_manifest: dict, where: str = "") -> None:
    """Raise ``VocabularyMismatch`` naming each vocabulary whose hash differs."""
    trained = model_manifest.get("vocabulary", {})
    current = features_manifest.get("hashes", {})
    diffs = [
        f"{name}: model {trained.get(name)} != features {current.get(name)}"
        for name in CHECKED_VOCABULARIES
        if trained.get(name) != current.get(name)
    ]
    if diffs:
        raise VocabularyMismatch(
            f"model{' at ' + where if where else ''} (trained on features ds={model_manifest.get('ds')}) "
            f"does not match features ds={features_manifest.get('ds')}: {'; '.join(diffs)}. "
            "Scores would be misaligned; retrain on these features or use the matching model."
        )


@dataclass
class LoadedModels:
    film: FilmAE
    user: UserAE
    manifest: dict


def check_user_config(manifest: dict, where: str) -> None:
    """Raise ``CorruptFile`` naming ``where`` when the manifest's user-AE settings are out of
    range (``UserAEConfig.validate``): a model must not be scored with settings it was not
    trained with."""
    with reading(where, "model manifest (user-AE settings out of range)", "re-run the train job for that date"):
        UserAEConfig(**manifest["config"]["user"]).validate()


def load_models(
    directory: str, features_manifest: dict | None = None, device: torch.device | str = "cpu"
) -> LoadedModels:
    """Load ``models/ds=…``; with ``features_manifest``, check vocabularies first."""
    manifest = read_manifest(directory)
    if features_manifest is not None:
        check_vocabulary(manifest, features_manifest, directory)
    fix = "re-run the train job for that date"
    with reading(f"{directory}/{MANIFEST}", "model manifest (no dims or config)", fix):
        dims, config = manifest["dims"], manifest["config"]
        film = FilmAE(dims["n_genome"], dims["n_genres"], dims["n_numeric"], FilmAEConfig(**config["film"]))
    check_user_config(manifest, f"{directory}/{MANIFEST}")
    user = UserAE(dims["n_films"], torch.zeros(dims["n_films"], dims["film_content_dim"]), UserAEConfig(**config["user"]))
    for model, name in ((film, FILM_WEIGHTS), (user, USER_WEIGHTS)):
        path = f"{directory}/{name}"
        try:
            data = _read_bytes(path)
        except FileNotFoundError as exc:
            raise InputError(f"{path} is missing: the model of that date is incomplete; {fix}") from exc
        check_recorded_digest(path, hashlib.sha256(data).hexdigest(), manifest)
        with reading(path, "model checkpoint (truncated or not a state dict of this model)", fix):
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        model.to(device).eval()
    return LoadedModels(film, user, manifest)


def read_manifest(directory: str) -> dict:
    """``models/ds=…/manifest.json``; InputError when absent, CorruptFile when unreadable."""
    path = f"{directory}/{MANIFEST}"
    try:
        data = _read_bytes(path)
    except FileNotFoundError as exc:
        raise InputError(f"no model at {directory}: run the train job for that date first") from exc
    with reading(path, "model manifest", "re-run the train job for that date"):
        manifest = json.loads(data.decode("utf-8"))
        if not isinstance(manifest, dict):
            raise TypeError(f"expected a JSON object, got {type(manifest).__name__}")
    return manifest


# ---------------------------------------------------------------- embeddings


def embedding_array(matrix: np.ndarray) -> pa.ListArray:
    """(n, d) float32 -> ``list<float32>`` without a Python loop."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    n, d = matrix.shape
    offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int64 if n * d >= 2**31 else np.int32))
    cls = pa.LargeListArray if n * d >= 2**31 else pa.ListArray
    return cls.from_arrays(offsets, pa.array(matrix.reshape(-1)))


def write_embeddings(
    directory: str,
    user_ids: np.ndarray,
    user_embeddings: np.ndarray,
    movie_ids: np.ndarray,
    film_vectors: np.ndarray,
    film_bias: np.ndarray,
    model_version: str,
) -> None:
    """Publish ``users`` (user_id, embedding) and ``films`` (movie_id, embedding, bias), and
    ``_model.json`` naming the ``model_version`` they come from.

    A user's score for a film is ``user.embedding . film.embedding + film.bias``; nearest
    films to a user by that inner product are the model's recommendations.
    """
    users = pa.table({"user_id": pa.array(user_ids, pa.int32()), "embedding": embedding_array(user_embeddings)})
    films = pa.table({
        "movie_id": pa.array(movie_ids, pa.int32()),
        "embedding": embedding_array(film_vectors),
        "bias": pa.array(np.asarray(film_bias, dtype=np.float32)),
    })  # fmt: skip

    def write(staging: str) -> None:
        for name, table in (("users", users), ("films", films)):
            fs, inner = _fs(f"{staging}/{name}")
            fs.create_dir(inner, recursive=True)
            pq.write_table(table, f"{inner}/part-00000.parquet", filesystem=fs, compression="zstd")
        _write_bytes(f"{staging}/{EMBEDDINGS_MODEL}", json.dumps({"model_version": model_version}).encode())

    _publish(directory, write)


def embeddings_model_version(directory: str) -> str | None:
    """The ``model_version`` recorded with ``embeddings/ds=…``; None when absent or unreadable
    (then the scoring job writes them again)."""
    try:
        return json.loads(_read_bytes(f"{directory}/{EMBEDDINGS_MODEL}").decode("utf-8")).get("model_version")
    except (FileNotFoundError, ValueError, AttributeError):
        return None
