"""MJCF (MuJoCo XML) edits with ElementTree: maze walls and custom numerics.

Pure XML, no brax or MuJoCo import: the robot modules edit a parsed asset with these before
`brax.io.mjcf.loads` (and native MuJoCo) read it, so both simulators see the same model.

Contact bits. A pair collides when contype(a) & conaffinity(b) or contype(b) & conaffinity(a).
The floor is contype 0 / conaffinity 1 and robot geoms that touch it have contype 1. Walls are
contype 2 / conaffinity 0 and the robot geoms chosen to hit walls get conaffinity bit 2 added,
so walls touch exactly those geoms and no new robot-robot or robot-floor pairs appear.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from crl_distill.envs.mazes import wall_grid

_WALL_CONTYPE, _WALL_CONAFFINITY, _WALL_BIT = "2", "0", 2
#: walls also reach this far below the floor: only the ant's feet touch the floor, so a flipped
#: ant's torso can sink below it (by up to ~0.5 m), and must not slip under a wall there.
WALL_DEPTH = 1.0


def set_first_numeric(root: ET.Element, name: str, data: str) -> None:
    """Make `<numeric name=... data=.../>` the first custom numeric of the model.

    mjx (3.17) reads single-value numerics such as `max_geom_pairs` as `numeric_data[id]`, i.e.
    by the numeric's index rather than its data address; the two agree only for the first one.
    """
    custom = root.find("custom")
    if custom is None:
        custom = ET.SubElement(root, "custom")
    for el in custom.findall("numeric"):
        if el.get("name") == name:
            custom.remove(el)
    custom.insert(0, ET.Element("numeric", name=name, data=data))


def _geom_default(root: ET.Element, geom: ET.Element, attr: str) -> int:
    """An int geom attribute: the geom's own, else the top-level <default>'s, else MuJoCo's (1)."""
    if attr in geom.attrib:
        return int(geom.get(attr))
    default = root.find("default/geom")
    return int(default.get(attr, 1)) if default is not None else 1


def add_maze_walls(
    root: ET.Element,
    layout: tuple[str, ...],
    cell_size: float,
    wall_height: float,
    wall_geoms: tuple[str, ...] | None,
    max_geom_pairs: int,
) -> int:
    """Add one box per reachable wall cell to `root`'s worldbody; return the number of boxes.

    Cell (i, j) is centred at world (x, y) = (i, j) * cell_size (the paper's convention); each
    box is `wall_height` high above the floor and reaches `WALL_DEPTH` below it.
    wall_geoms: names of the robot's geoms that collide with walls; None for every robot geom.
    Wall cells with no free cell among their 8 neighbours can never be touched and are left
    out. `max_geom_pairs` makes mjx keep only the nearest robot-wall pairs (by bounding-sphere
    distance) per geom-type group, so the contact cost does not grow with the maze's size.
    """
    walls = wall_grid(layout)
    free = ~walls
    worldbody = root.find("worldbody")
    half = cell_size / 2
    half_z = (wall_height + WALL_DEPTH) / 2
    mid_z = (wall_height - WALL_DEPTH) / 2
    n = 0
    for i, j in np.argwhere(walls):
        if not free[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].any():
            continue
        ET.SubElement(
            worldbody,
            "geom",
            name=f"wall_{i}_{j}",
            type="box",
            pos=f"{i * cell_size} {j * cell_size} {mid_z}",
            size=f"{half} {half} {half_z}",
            contype=_WALL_CONTYPE,
            conaffinity=_WALL_CONAFFINITY,
            rgba="0.7 0.5 0.3 1",
        )
        n += 1
    robot = worldbody.find("body")
    found = set()
    for geom in robot.iter("geom"):
        if wall_geoms is None or geom.get("name") in wall_geoms:
            geom.set("conaffinity", str(_geom_default(root, geom, "conaffinity") | _WALL_BIT))
            found.add(geom.get("name"))
    if missing := set(wall_geoms or ()) - found:
        raise ValueError(f"robot has no geoms named {sorted(missing)}")
    set_first_numeric(root, "max_geom_pairs", str(max_geom_pairs))
    return n


__all__ = ["WALL_DEPTH", "add_maze_walls", "set_first_numeric"]
