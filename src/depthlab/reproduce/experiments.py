"""Imports every built-in experiment module so that each registers itself."""

from . import (  # noqa: F401
    depth_ladder,
    glorot2010,
    he2015,
    ioffe2015,
    klambauer2017,
    saxe2013,
    schoenholz2017,
    xu2016,
    yang2019,
)
