"""The two autoencoders: films from their content, users from their ratings."""

from recsys_core.models.film_ae import FilmAE, FilmAEConfig
from recsys_core.models.user_ae import UserAE, UserAEConfig

__all__ = ["FilmAE", "FilmAEConfig", "UserAE", "UserAEConfig"]
