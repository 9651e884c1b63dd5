//! The KAGI keypoint affordance scorer: propose keypoints and waypoints on the image, lift
//! them to 3-D with depth, and score progress along the waypoints as a dense reward.
//!
//! - **Propose** ([`candidate_marks`], [`draw_marks`], [`KeypointProposer`]): numbered
//!   candidate marks (a grid, or the centroids of saturated colour blobs) are drawn on the
//!   frame; a VLM answers which marks are the affordance keypoints and the ordered waypoints,
//!   as JSON that [`parse_proposal`] validates. Keypoints may also come from the launch file
//!   or, in sim, from ground truth. Proposing happens once per episode or phase.
//! - **Lift** ([`lift`]): pixel + depth (bilinear over valid neighbours) + intrinsics +
//!   `world_from_camera` → a world point.
//! - **Score** ([`DenseScorer`]): the distance of the tracked point (tool or object) to the
//!   current waypoint; the waypoint advances once within a radius. The reward is in [0, 1), so a
//!   sparse success reward of 1 always dominates.

use nalgebra::{Isometry3, Point3};
use serde::Deserialize;
use serde_json::Value;

use crate::classifier::ImageRef;
use crate::error::{Error, Result};
use crate::vlm::{VlmClient, answer_text};

/// A numbered candidate mark at pixel `(u, v)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mark {
    pub id: u32,
    pub u: f64,
    pub v: f64,
}

/// How candidate marks are placed.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MarkSource {
    /// A `cols × rows` grid of cell centres.
    Grid { cols: u32, rows: u32 },
    /// Centroids of blobs of saturated colour (objects, tape, decals), largest first.
    Colour { max_marks: u32, min_area_px: u32 },
}

/// Candidate marks on `image`, numbered from 1.
pub fn candidate_marks(image: &ImageRef<'_>, source: MarkSource) -> Vec<Mark> {
    match source {
        MarkSource::Grid { cols, rows } => {
            let (cols, rows) = (cols.max(1), rows.max(1));
            let mut out = Vec::new();
            for r in 0..rows {
                for c in 0..cols {
                    out.push(Mark {
                        id: r * cols + c + 1,
                        u: (f64::from(c) + 0.5) * f64::from(image.width) / f64::from(cols),
                        v: (f64::from(r) + 0.5) * f64::from(image.height) / f64::from(rows),
                    });
                }
            }
            out
        }
        MarkSource::Colour {
            max_marks,
            min_area_px,
        } => colour_blobs(image, min_area_px)
            .into_iter()
            .take(max_marks as usize)
            .enumerate()
            .map(|(i, (u, v))| Mark {
                id: i as u32 + 1,
                u,
                v,
            })
            .collect(),
    }
}

/// Centroids of 4-connected blobs of saturated pixels, largest first.
fn colour_blobs(image: &ImageRef<'_>, min_area: u32) -> Vec<(f64, f64)> {
    let (w, h) = (image.width as usize, image.height as usize);
    let saturated: Vec<bool> = image
        .rgb
        .chunks_exact(3)
        .map(|p| {
            let (mx, mn) = (p.iter().max().copied(), p.iter().min().copied());
            let (mx, mn) = (i32::from(mx.unwrap_or(0)), i32::from(mn.unwrap_or(0)));
            mx > 60 && (mx - mn) * 100 > 45 * mx
        })
        .collect();
    let mut seen = vec![false; w * h];
    let mut blobs = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !saturated[start] || seen[start] {
            continue;
        }
        let colour = |i: usize| {
            let p = &image.rgb[i * 3..i * 3 + 3];
            [p[0], p[1], p[2]]
        };
        let c0 = colour(start);
        let close = |a: [u8; 3], b: [u8; 3]| {
            a.iter()
                .zip(&b)
                .map(|(x, y)| (i32::from(*x) - i32::from(*y)).abs())
                .sum::<i32>()
                < 90
        };
        let (mut n, mut su, mut sv) = (0u32, 0.0, 0.0);
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            n += 1;
            su += x as f64 + 0.5;
            sv += y as f64 + 0.5;
            let mut visit = |j: usize| {
                if saturated[j] && !seen[j] && close(colour(j), c0) {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
        if n >= min_area.max(1) {
            blobs.push((n, su / f64::from(n), sv / f64::from(n)));
        }
    }
    blobs.sort_by_key(|b| std::cmp::Reverse(b.0));
    blobs.into_iter().map(|(_, u, v)| (u, v)).collect()
}

/// 3×5 digit glyphs, one row per 3 bits.
const DIGITS: [[u8; 5]; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];

/// A copy of `image` with each mark drawn as a white label holding its number in black,
/// `scale` pixels per font pixel, with a black dot at the exact point.
pub fn draw_marks(image: &ImageRef<'_>, marks: &[Mark], scale: u32) -> Vec<u8> {
    let mut out = image.rgb.to_vec();
    let (w, h) = (i64::from(image.width), i64::from(image.height));
    let s = i64::from(scale.max(1));
    let mut put = |x: i64, y: i64, c: u8| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            let i = ((y * w + x) * 3) as usize;
            out[i..i + 3].fill(c);
        }
    };
    for m in marks {
        let text = m.id.to_string();
        let (u, v) = (m.u.floor() as i64, m.v.floor() as i64);
        let tw = (text.len() as i64 * 4 + 1) * s;
        let th = 7 * s;
        // The label sits above-right of the point so it does not cover it.
        let (x0, y0) = (u + s, v - th - s);
        for y in 0..th {
            for x in 0..tw {
                put(x0 + x, y0 + y, 255);
            }
        }
        for (k, ch) in text.bytes().enumerate() {
            let g = DIGITS[usize::from(ch - b'0')];
            for (r, bits) in g.iter().enumerate() {
                for c in 0..3 {
                    if bits & (4 >> c) != 0 {
                        for dy in 0..s {
                            for dx in 0..s {
                                put(
                                    x0 + (1 + k as i64 * 4 + c) * s + dx,
                                    y0 + (1 + r as i64) * s + dy,
                                    0,
                                );
                            }
                        }
                    }
                }
            }
        }
        for dy in -1..=1 {
            for dx in -1..=1 {
                put(u + dx, v + dy, 0);
            }
        }
    }
    out
}

/// Which marks the VLM chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Affordance keypoints (where to act on the object).
    pub keypoints: Vec<u32>,
    /// Ordered waypoints the object or tool should pass through.
    pub waypoints: Vec<u32>,
}

/// The question asked with the marked image.
pub fn proposal_prompt(task: &str, marks: &[Mark]) -> String {
    let ids: Vec<String> = marks.iter().map(|m| m.id.to_string()).collect();
    format!(
        "A robot arm must do this task: {task}. The image shows numbered marks ({}). \
         Which marks are the affordance keypoints (where the robot should act on the object), \
         and which marks, in order, should the object pass through to complete the task? \
         Answer only with JSON: {{\"keypoints\": [numbers], \"waypoints\": [numbers]}}.",
        ids.join(", ")
    )
}

/// Parses and validates the VLM's answer: the first JSON object in the text (code fences and
/// prose around it are fine), every number must be a drawn mark, waypoints non-empty.
pub fn parse_proposal(text: &str, marks: &[Mark]) -> Result<Proposal> {
    let start = text
        .find('{')
        .ok_or_else(|| Error::Answer(format!("no JSON object in {text:?}")))?;
    let mut de = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
    let v = match de.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(Error::Answer(format!("bad JSON ({e}) in {text:?}"))),
        None => return Err(Error::Answer(format!("no JSON object in {text:?}"))),
    };
    let ids = |key: &str| -> Result<Vec<u32>> {
        let arr = v
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Answer(format!("`{key}` is missing or not a list in {v}")))?;
        arr.iter()
            .map(|x| {
                let id = x
                    .as_u64()
                    .or_else(|| x.as_str().and_then(|s| s.trim().parse().ok()))
                    .ok_or_else(|| {
                        Error::Answer(format!("`{key}` holds {x}, not a mark number"))
                    })?;
                if !marks.iter().any(|m| u64::from(m.id) == id) {
                    return Err(Error::Answer(format!(
                        "`{key}` names mark {id}, which was not drawn (marks 1..={})",
                        marks.len()
                    )));
                }
                Ok(id as u32)
            })
            .collect()
    };
    let p = Proposal {
        keypoints: ids("keypoints")?,
        waypoints: ids("waypoints")?,
    };
    if p.waypoints.is_empty() {
        return Err(Error::Answer("`waypoints` is empty".into()));
    }
    if p.waypoints.len() > 16 {
        return Err(Error::Answer(format!(
            "{} waypoints; at most 16 are used",
            p.waypoints.len()
        )));
    }
    Ok(p)
}

/// Asks a VLM for keypoints and waypoints on marked frames.
pub struct KeypointProposer {
    pub client: VlmClient,
    pub marks: MarkSource,
    /// Pixels per font pixel of the drawn numbers.
    pub label_scale: u32,
}

impl KeypointProposer {
    /// Draws the marks, asks, parses. Returns the marks with the proposal.
    pub fn propose(&mut self, image: &ImageRef<'_>, task: &str) -> Result<(Vec<Mark>, Proposal)> {
        let marks = candidate_marks(image, self.marks);
        if marks.is_empty() {
            return Err(Error::Frame("no candidate marks found in the frame".into()));
        }
        let drawn = draw_marks(image, &marks, self.label_scale);
        let marked = ImageRef::new(image.width, image.height, &drawn)?;
        let body = self
            .client
            .chat_body(&marked, &proposal_prompt(task, &marks), 200)?;
        let resp = self.client.post(&body)?;
        let p = parse_proposal(answer_text(&resp)?, &marks)?;
        Ok((marks, p))
    }
}

/// Pinhole intrinsics (`sensor_msgs/CameraInfo.k`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intrinsics {
    pub fx: f64,
    pub fy: f64,
    pub cx: f64,
    pub cy: f64,
}

impl Intrinsics {
    /// From a row-major 3×3 K.
    pub fn from_k(k: &[f64]) -> Result<Self> {
        let [fx, _, cx, _, fy, cy, ..] = k[..] else {
            return Err(Error::config(
                "k",
                format!("needs 9 values, got {}", k.len()),
            ));
        };
        if !(fx > 0.0 && fy > 0.0 && cx.is_finite() && cy.is_finite()) {
            return Err(Error::config(
                "k",
                format!("fx {fx}, fy {fy} must be positive"),
            ));
        }
        Ok(Self { fx, fy, cx, cy })
    }
}

/// A depth image in metres (`32FC1`), NaN or ≤ 0 where unknown.
#[derive(Debug, Clone, Copy)]
pub struct DepthRef<'a> {
    pub width: u32,
    pub height: u32,
    pub depth: &'a [f32],
}

impl DepthRef<'_> {
    fn at(&self, x: i64, y: i64) -> Option<f64> {
        if x < 0 || y < 0 || x >= i64::from(self.width) || y >= i64::from(self.height) {
            return None;
        }
        let d = *self
            .depth
            .get(y as usize * self.width as usize + x as usize)?;
        (d.is_finite() && d > 0.0).then_some(f64::from(d))
    }

    /// Depth at a sub-pixel position (pixel centres at integer coordinates, as the intrinsics
    /// place them): bilinear over the valid neighbours.
    pub fn sample(&self, u: f64, v: f64) -> Option<f64> {
        let (x0, y0) = (u.floor() as i64, v.floor() as i64);
        let (fx, fy) = (u - x0 as f64, v - y0 as f64);
        let mut acc = 0.0;
        let mut wsum = 0.0;
        for (dx, dy, w) in [
            (0, 0, (1.0 - fx) * (1.0 - fy)),
            (1, 0, fx * (1.0 - fy)),
            (0, 1, (1.0 - fx) * fy),
            (1, 1, fx * fy),
        ] {
            if let Some(d) = self.at(x0 + dx, y0 + dy) {
                acc += w * d;
                wsum += w;
            }
        }
        (wsum > 1e-9).then(|| acc / wsum)
    }
}

/// The world point seen at pixel `(u, v)` (ROS convention: pixel centres at integers, optical
/// frame x right, y down, z forward).
pub fn lift(
    u: f64,
    v: f64,
    depth: &DepthRef<'_>,
    k: &Intrinsics,
    world_from_camera: &Isometry3<f64>,
) -> Result<Point3<f64>> {
    let z = depth
        .sample(u, v)
        .ok_or_else(|| Error::Frame(format!("no valid depth at pixel ({u:.1}, {v:.1})")))?;
    let c = Point3::new((u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z);
    Ok(world_from_camera * c)
}

/// What a waypoint's distance is measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tracked {
    Tool,
    Object,
}

/// A 3-D waypoint and what must reach it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Waypoint {
    pub point: Point3<f64>,
    pub track: Tracked,
}

/// Progress along waypoints, as a dense reward in [0, 1).
#[derive(Debug, Clone)]
pub struct DenseScorer {
    waypoints: Vec<Waypoint>,
    radius_m: f64,
    reached: usize,
    /// Distance to the current waypoint when it became current.
    start_dist: Option<f64>,
}

impl DenseScorer {
    pub fn new(waypoints: Vec<Waypoint>, radius_m: f64) -> Result<Self> {
        if waypoints.is_empty() {
            return Err(Error::config("waypoints", "need at least one"));
        }
        if !(radius_m.is_finite() && radius_m > 0.0) {
            return Err(Error::config(
                "radius_m",
                format!("{radius_m} must be positive"),
            ));
        }
        Ok(Self {
            waypoints,
            radius_m,
            reached: 0,
            start_dist: None,
        })
    }

    pub fn waypoints(&self) -> &[Waypoint] {
        &self.waypoints
    }
    /// Waypoints reached so far.
    pub fn reached(&self) -> usize {
        self.reached
    }

    /// Starts over (a new episode or phase).
    pub fn reset(&mut self) {
        self.reached = 0;
        self.start_dist = None;
    }

    /// The reward for the current positions: `(reached + progress within the segment) / (n + 1)`.
    pub fn score(&mut self, tool: &Point3<f64>, object: &Point3<f64>) -> f32 {
        let n = self.waypoints.len();
        let mut seg = 0.0;
        while self.reached < n {
            let w = self.waypoints[self.reached];
            let p = match w.track {
                Tracked::Tool => tool,
                Tracked::Object => object,
            };
            let d = (p - w.point).norm();
            if !d.is_finite() {
                break;
            }
            if d <= self.radius_m {
                self.reached += 1;
                self.start_dist = None;
                continue;
            }
            let d0 = *self.start_dist.get_or_insert(d);
            seg = ((d0 - d) / (d0 - self.radius_m).max(1e-9)).clamp(0.0, 1.0);
            break;
        }
        ((self.reached as f64 + seg) / (n as f64 + 1.0)) as f32
    }
}
