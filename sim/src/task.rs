//! The tasks, each with a forward and a backward (reset) direction, and their ground truth:
//! success and a progress measure. Ground truth is for evaluation and tests only; the learner
//! never sees it.

use nalgebra::{Isometry3, Vector2, Vector3};
use serde::{Deserialize, Serialize};

/// A task the scene is laid out for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Push the cube from the start region into the target region (and back).
    Push,
    /// Pick the cube from the start region and place it on the platform (and back).
    PickPlace,
}

impl TaskKind {
    pub const ALL: [TaskKind; 2] = [TaskKind::Push, TaskKind::PickPlace];

    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Push => "push",
            TaskKind::PickPlace => "pick_place",
        }
    }

    /// Parses `push` or `pick_place` (also `pick-place`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "push" => Some(TaskKind::Push),
            "pick_place" | "pick-place" | "pickplace" => Some(TaskKind::PickPlace),
            _ => None,
        }
    }

    /// The start region on the table, where the forward direction begins.
    pub fn start_region(self) -> Region {
        Region {
            center: Vector2::new(0.5, -0.15),
            half: 0.05,
            surface_z: 0.0,
        }
    }

    /// Where the forward direction ends: the target region, or the platform's top.
    pub fn goal_region(self) -> Region {
        match self {
            TaskKind::Push => Region {
                center: Vector2::new(0.5, 0.15),
                half: 0.05,
                surface_z: 0.0,
            },
            TaskKind::PickPlace => Region {
                center: Vector2::new(0.5, 0.17),
                half: 0.05,
                surface_z: PLATFORM_HALF.z * 2.0,
            },
        }
    }

    /// `(from, to)` regions of a direction.
    pub fn regions(self, dir: Direction) -> (Region, Region) {
        match dir {
            Direction::Forward => (self.start_region(), self.goal_region()),
            Direction::Backward => (self.goal_region(), self.start_region()),
        }
    }

    /// The platform's box (centre, half extents), for the pick-and-place scene.
    pub fn platform(self) -> Option<(Vector3<f64>, Vector3<f64>)> {
        match self {
            TaskKind::Push => None,
            TaskKind::PickPlace => {
                let g = self.goal_region();
                Some((
                    Vector3::new(g.center.x, g.center.y, PLATFORM_HALF.z),
                    PLATFORM_HALF,
                ))
            }
        }
    }
}

/// The platform is 12 × 12 × 4 cm.
pub const PLATFORM_HALF: Vector3<f64> = Vector3::new(0.06, 0.06, 0.02);

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Forward does the task; backward undoes it, so training needs nobody to reset the scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Forward,
    Backward,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Forward, Direction::Backward];

    pub fn name(self) -> &'static str {
        match self {
            Direction::Forward => "forward",
            Direction::Backward => "backward",
        }
    }

    pub fn reverse(self) -> Self {
        match self {
            Direction::Forward => Direction::Backward,
            Direction::Backward => Direction::Forward,
        }
    }
}

/// A square region on a horizontal surface.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    pub center: Vector2<f64>,
    /// Half the side of the square.
    pub half: f64,
    /// Height of the surface it lies on.
    pub surface_z: f64,
}

impl Region {
    /// Whether the point's xy lies inside the square.
    pub fn contains_xy(&self, p: &Vector3<f64>) -> bool {
        self.contains_xy_inset(p, 0.0)
    }

    /// Whether the point's xy lies at least `inset` inside the square.
    pub fn contains_xy_inset(&self, p: &Vector3<f64>, inset: f64) -> bool {
        let h = self.half - inset;
        (p.x - self.center.x).abs() <= h && (p.y - self.center.y).abs() <= h
    }

    /// Where an object of half height `h` rests at the centre.
    pub fn rest_point(&self, h: f64) -> Vector3<f64> {
        Vector3::new(self.center.x, self.center.y, self.surface_z + h)
    }
}

/// Ground truth of a task at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskStatus {
    /// The cube rests, released and still, inside the goal region of the direction.
    pub success: bool,
    /// 0 at the start region's centre, 1 at the goal's resting point (distance-based, clamped).
    pub progress: f64,
    /// Distance from the cube to the goal's resting point, metres.
    pub distance_m: f64,
}

/// Evaluates `dir` of `task` given the cube's pose and state.
pub fn evaluate(
    task: TaskKind,
    dir: Direction,
    cube: &Isometry3<f64>,
    cube_half: f64,
    cube_speed: f64,
    grasped: bool,
) -> TaskStatus {
    let (from, to) = task.regions(dir);
    let p = cube.translation.vector;
    let goal = to.rest_point(cube_half);
    let d0 = (from.rest_point(cube_half) - goal).norm();
    let d = (p - goal).norm();
    let resting = (p.z - goal.z).abs() < 0.01 && cube_speed < 0.05;
    TaskStatus {
        success: to.contains_xy(&p) && resting && !grasped,
        progress: (1.0 - d / d0).clamp(0.0, 1.0),
        distance_m: d,
    }
}
