"""Maze layouts: '#' is a wall cell, every other character a free cell.

Two families. `POINT_LAYOUTS` are this project's point mazes, generated in code; there cell
(row i, col j) covers x in [j, j+1) and y in [i, i+1). `PAPER_LAYOUTS` are the paper's ant and
humanoid mazes, with its start ('r') and goal ('g') cells; the robot envs place cell (i, j)'s
centre at world (x, y) = (i, j) * cell_size, as the paper's code does, so positions (and imported
reference checkpoints) mean the same in both. Every layout has a wall border.
"""

from __future__ import annotations

import numpy as np


def u_maze(arm: int) -> tuple[str, ...]:
    """A U-shaped corridor: `arm` free cells along the top and bottom, joined on the right."""
    if arm < 2:
        raise ValueError("u_maze arm must be >= 2")
    width = arm + 2
    return (
        "#" * width,
        "#" + "." * arm + "#",
        "#" * (width - 2) + ".#",
        "#" + "." * arm + "#",
        "#" * width,
    )


def carved_maze(rooms_h: int, rooms_w: int, extra_openings: int, seed: int) -> tuple[str, ...]:
    """A maze carved by randomized depth-first search, then braided with `extra_openings` loops.

    `rooms_h` x `rooms_w` rooms give a (2*rooms_h+1) x (2*rooms_w+1) grid. The seed is fixed per
    named layout so a name always means the same maze.
    """
    rng = np.random.default_rng(seed)
    grid = np.ones((2 * rooms_h + 1, 2 * rooms_w + 1), dtype=bool)
    seen = np.zeros((rooms_h, rooms_w), dtype=bool)
    stack = [(0, 0)]
    seen[0, 0] = True
    grid[1, 1] = False
    while stack:
        r, c = stack[-1]
        nbrs = [
            (r + dr, c + dc)
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))
            if 0 <= r + dr < rooms_h and 0 <= c + dc < rooms_w and not seen[r + dr, c + dc]
        ]
        if not nbrs:
            stack.pop()
            continue
        nr, nc = nbrs[rng.integers(len(nbrs))]
        grid[r + nr + 1, c + nc + 1] = False  # the wall between the two rooms
        grid[2 * nr + 1, 2 * nc + 1] = False
        seen[nr, nc] = True
        stack.append((nr, nc))
    # Interior wall cells that separate two free cells in a straight line can become openings.
    candidates = [
        (i, j)
        for i in range(1, grid.shape[0] - 1)
        for j in range(1, grid.shape[1] - 1)
        if grid[i, j]
        and (
            (not grid[i - 1, j] and not grid[i + 1, j] and grid[i, j - 1] and grid[i, j + 1])
            or (not grid[i, j - 1] and not grid[i, j + 1] and grid[i - 1, j] and grid[i + 1, j])
        )
    ]
    for k in rng.permutation(len(candidates))[:extra_openings]:
        grid[candidates[k]] = False
    return tuple("".join("#" if w else "." for w in row) for row in grid)


#: This project's own point-maze layouts (the pure-JAX `pointmaze_*` envs; not the paper's mazes).
POINT_LAYOUTS: dict[str, tuple[str, ...]] = {
    "u": u_maze(3),
    "big": carved_maze(3, 4, extra_openings=3, seed=7),
    "hardest": carved_maze(5, 5, extra_openings=4, seed=11),
}

# The paper's maze layouts (scaling-crl / JaxGCRL `ant_maze.py`, `humanoid_maze.py`), transcribed
# as facts: '#' wall, 'r' the start cell, 'g' a goal cell, '.' free but neither. The `_eval`
# variants keep the walls and start and leave only the far goal cells.
PAPER_LAYOUTS: dict[str, tuple[str, ...]] = {
    "u": ("#####", "#rgg#", "###g#", "#ggg#", "#####"),
    "u_eval": ("#####", "#r..#", "###.#", "#ggg#", "#####"),
    "u2": ("######", "#rggg#", "####g#", "#gggg#", "######"),
    "u2_eval": ("######", "#r...#", "####.#", "#gggg#", "######"),
    "u3": ("#######", "#rgggg#", "#####g#", "#ggggg#", "#######"),
    "u3_eval": ("#######", "#r....#", "#####.#", "#ggggg#", "#######"),
    "u4": ("#####", "#ggg#", "#r#g#", "###g#", "#g#g#", "#ggg#", "#####"),
    "u4_eval": ("#####", "#...#", "#r#.#", "###.#", "#g#.#", "#ggg#", "#####"),
    "u5": ("########", "#gggggg#", "#r####g#", "######g#", "#g####g#", "#gggggg#", "########"),
    "u5_eval": ("########", "#......#", "#r####.#", "######.#", "#g####g#", "#gggggg#",
                "########"),
    "u6": ("#######", "#ggggg#", "#r###g#", "#####g#", "#g###g#", "#ggggg#", "#######"),
    "u6_eval": ("#######", "#.....#", "#r###.#", "#####.#", "#g###g#", "#ggggg#", "#######"),
    "u7": ("######", "#gggg#", "#r##g#", "####g#", "#g##g#", "#gggg#", "######"),
    "u7_eval": ("######", "#....#", "#r##.#", "####.#", "#g##g#", "#gggg#", "######"),
    "big": ("########", "#rg##gg#", "#gg#ggg#", "##ggg###", "#gg#ggg#", "#g#gg#g#", "#ggg#gg#",
            "########"),
    "big_eval": ("########", "#r.##gg#", "#..#..g#", "##...###", "#..#...#", "#.#g.#g#",
                 "#.gg#gg#", "########"),
    "hardest": ("############", "#rggg#ggggg#", "#g##g#g#g#g#", "#gggggg#ggg#", "#g####g###g#",
                "#gg#g#ggggg#", "##g#g#g#g###", "#gg#ggg#ggg#", "############"),
}


def wall_grid(layout: tuple[str, ...]) -> np.ndarray:
    """[rows, cols] bool, True where the cell is a wall."""
    return np.array([[ch == "#" for ch in row] for row in layout], dtype=bool)


def free_cells(layout: tuple[str, ...]) -> np.ndarray:
    """[n_free, 2] int (row, col) of every free cell, in row-major order."""
    return np.argwhere(~wall_grid(layout))


def marked_cells(layout: tuple[str, ...], mark: str) -> np.ndarray:
    """[n, 2] int (row, col) of every cell marked `mark` ('r' start, 'g' goal), row-major."""
    return np.argwhere(np.array([[ch == mark for ch in row] for row in layout]))
