//! A software camera: a z-buffered triangle rasterizer with Lambert shading, producing RGB and
//! metric depth from a pinhole camera. No GPU, no allocation per frame once buffers exist.
//!
//! Conventions (ROS): the camera's optical frame has x right, y down, z forward; pixel (u, v)
//! is sampled at its centre, which the intrinsics place at `u = fx·x/z + cx`. Depth is the
//! z coordinate in the optical frame, in metres (NaN where nothing was hit).

use nalgebra::{Isometry3, Matrix3, Point3, Rotation3, Translation3, UnitQuaternion, Vector3};

use crate::model::Geom;
use crate::world::Visual;

/// A pinhole camera.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Camera {
    pub width: u32,
    pub height: u32,
    pub fx: f64,
    pub fy: f64,
    pub cx: f64,
    pub cy: f64,
    /// Pose of the optical frame in the world.
    pub world_from_camera: Isometry3<f64>,
}

impl Camera {
    /// A camera at `eye` looking at `target` (world z up), with horizontal field of view
    /// `hfov_deg` and square pixels.
    pub fn look_at(
        width: u32,
        height: u32,
        hfov_deg: f64,
        eye: Point3<f64>,
        target: Point3<f64>,
    ) -> Self {
        let f = 0.5 * f64::from(width) / (0.5 * hfov_deg.to_radians()).tan();
        Self {
            width,
            height,
            fx: f,
            fy: f,
            cx: 0.5 * (f64::from(width) - 1.0),
            cy: 0.5 * (f64::from(height) - 1.0),
            world_from_camera: optical_look_at(eye, target),
        }
    }

    /// The default scene camera: in front of the robot, looking down at the workspace.
    pub fn scene(width: u32, height: u32) -> Self {
        Self::look_at(
            width,
            height,
            60.0,
            Point3::new(1.45, 0.4, 0.85),
            Point3::new(0.36, 0.0, 0.15),
        )
    }

    /// A wrist camera ([`default_hand_from_wrist_camera`] on the hand's pose).
    pub fn wrist(width: u32, height: u32, hfov_deg: f64, world_from_hand: &Isometry3<f64>) -> Self {
        let mut c = Self::look_at(
            width,
            height,
            hfov_deg,
            Point3::origin(),
            Point3::new(0.0, 0.0, 1.0),
        );
        c.world_from_camera = world_from_hand * default_hand_from_wrist_camera();
        c
    }

    /// The 3×3 intrinsic matrix, row-major (as in `sensor_msgs/CameraInfo.k`).
    pub fn k(&self) -> [f64; 9] {
        [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]
    }

    /// Pixel coordinates and depth of a world point, if it is in front of the camera.
    pub fn project(&self, p: &Point3<f64>) -> Option<(f64, f64, f64)> {
        let c = self.world_from_camera.inverse_transform_point(p);
        (c.z > 1e-6).then(|| {
            (
                self.fx * c.x / c.z + self.cx,
                self.fy * c.y / c.z + self.cy,
                c.z,
            )
        })
    }

    /// The world point seen at pixel `(u, v)` with depth `depth` (the keypoint lifting).
    pub fn unproject(&self, u: f64, v: f64, depth: f64) -> Point3<f64> {
        let c = Point3::new(
            (u - self.cx) / self.fx * depth,
            (v - self.cy) / self.fy * depth,
            depth,
        );
        self.world_from_camera * c
    }
}

/// The wrist camera sits beside the hand, looking along the fingers and tilted towards them.
pub fn default_hand_from_wrist_camera() -> Isometry3<f64> {
    Isometry3::from_parts(
        Translation3::new(0.07, 0.0, 0.0),
        UnitQuaternion::from_euler_angles(0.0, -0.3, std::f64::consts::FRAC_PI_2),
    )
}

/// Optical frame (z forward, x right, y down) at `eye` looking at `target`, world z up.
pub fn optical_look_at(eye: Point3<f64>, target: Point3<f64>) -> Isometry3<f64> {
    let z = (target - eye).normalize();
    let up = if z.cross(&Vector3::z()).norm() < 1e-6 {
        Vector3::x()
    } else {
        Vector3::z()
    };
    let x = z.cross(&up).normalize();
    let y = z.cross(&x);
    let r = Rotation3::from_matrix_unchecked(Matrix3::from_columns(&[x, y, z]));
    Isometry3::from_parts(
        Translation3::from(eye.coords),
        UnitQuaternion::from_rotation_matrix(&r),
    )
}

/// One rendered image: rgb8 row-major, depth in metres (NaN where empty).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    pub depth: Vec<f32>,
}

struct Mesh {
    verts: Vec<[f32; 3]>,
    tris: Vec<[u16; 3]>,
}

impl Mesh {
    /// Orients every triangle outwards (the meshes are convex and centred at the origin).
    fn oriented(verts: Vec<[f32; 3]>, mut tris: Vec<[u16; 3]>) -> Self {
        let v = |i: u16| Vector3::from(verts[i as usize]);
        for t in &mut tris {
            let (a, b, c) = (v(t[0]), v(t[1]), v(t[2]));
            if (b - a).cross(&(c - a)).dot(&(a + b + c)) < 0.0 {
                t.swap(1, 2);
            }
        }
        Self { verts, tris }
    }

    fn unit_box() -> Self {
        let mut verts = Vec::new();
        for i in 0..8 {
            let s = |bit: i32| if i & bit != 0 { 1.0 } else { -1.0 };
            verts.push([s(1), s(2), s(4)]);
        }
        let quads = [
            [0, 2, 6, 4],
            [1, 3, 7, 5],
            [0, 1, 5, 4],
            [2, 3, 7, 6],
            [0, 1, 3, 2],
            [4, 5, 7, 6],
        ];
        let tris = quads
            .iter()
            .flat_map(|q| [[q[0], q[1], q[2]], [q[0], q[2], q[3]]])
            .collect();
        Self::oriented(verts, tris)
    }

    /// Radius 1, from z = −1 to 1.
    fn unit_cylinder(segments: u16) -> Self {
        let mut verts = Vec::new();
        for i in 0..segments {
            let a = f32::from(i) / f32::from(segments) * std::f32::consts::TAU;
            verts.push([a.cos(), a.sin(), -1.0]);
            verts.push([a.cos(), a.sin(), 1.0]);
        }
        let mut tris = Vec::new();
        for i in 0..segments {
            let j = (i + 1) % segments;
            let (a0, a1, b0, b1) = (2 * i, 2 * i + 1, 2 * j, 2 * j + 1);
            tris.push([a0, b0, b1]);
            tris.push([a0, b1, a1]);
            if i > 0 && j > 0 {
                tris.push([0, 2 * i, 2 * j]);
                tris.push([1, 2 * i + 1, 2 * j + 1]);
            }
        }
        Self::oriented(verts, tris)
    }

    /// Radius 1.
    fn unit_sphere(rings: u16, segments: u16) -> Self {
        let mut verts = vec![[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]];
        for r in 1..rings {
            let t = f32::from(r) / f32::from(rings) * std::f32::consts::PI;
            for s in 0..segments {
                let p = f32::from(s) / f32::from(segments) * std::f32::consts::TAU;
                verts.push([t.sin() * p.cos(), t.sin() * p.sin(), -t.cos()]);
            }
        }
        let idx = |r: u16, s: u16| 2 + (r - 1) * segments + s % segments;
        let mut tris = Vec::new();
        for s in 0..segments {
            tris.push([0, idx(1, s), idx(1, s + 1)]);
            tris.push([1, idx(rings - 1, s), idx(rings - 1, s + 1)]);
            for r in 1..rings - 1 {
                tris.push([idx(r, s), idx(r + 1, s), idx(r + 1, s + 1)]);
                tris.push([idx(r, s), idx(r + 1, s + 1), idx(r, s + 1)]);
            }
        }
        Self::oriented(verts, tris)
    }
}

/// The rasterizer and its buffers.
pub struct Renderer {
    cube: Mesh,
    cylinder: Mesh,
    sphere: Mesh,
    inv_z: Vec<f32>,
    cam_verts: Vec<[f32; 3]>,
    /// Direction towards the main light, world frame.
    pub light: Vector3<f64>,
    pub ambient: f32,
    pub background: [u8; 3],
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

const NEAR: f32 = 0.01;

impl Renderer {
    pub fn new() -> Self {
        Self {
            cube: Mesh::unit_box(),
            cylinder: Mesh::unit_cylinder(20),
            sphere: Mesh::unit_sphere(8, 12),
            inv_z: Vec::new(),
            cam_verts: Vec::new(),
            light: Vector3::new(0.35, 0.25, 1.0).normalize(),
            ambient: 0.38,
            background: [200, 214, 228],
        }
    }

    /// Draws `visuals` as seen by `cam` into `frame` (resized as needed).
    pub fn render(&mut self, visuals: &[Visual], cam: &Camera, frame: &mut Frame) {
        let (w, h) = (cam.width as usize, cam.height as usize);
        frame.width = cam.width;
        frame.height = cam.height;
        frame.rgb.clear();
        frame.rgb.resize(w * h * 3, 0);
        for px in frame.rgb.chunks_exact_mut(3) {
            px.copy_from_slice(&self.background);
        }
        self.inv_z.clear();
        self.inv_z.resize(w * h, 0.0);
        let cam_from_world = cam.world_from_camera.inverse();
        let light = (cam_from_world.rotation * self.light).cast::<f32>();
        let k = [cam.fx as f32, cam.fy as f32, cam.cx as f32, cam.cy as f32];
        for v in visuals {
            let (mesh, scale) = match v.geom {
                Geom::Box { half } => (&self.cube, half),
                Geom::Cylinder {
                    radius,
                    half_length,
                } => (&self.cylinder, Vector3::new(radius, radius, half_length)),
                Geom::Sphere { radius } => (&self.sphere, Vector3::repeat(radius)),
            };
            let m = cam_from_world * v.world_from_shape;
            let r = m.rotation.to_rotation_matrix().into_inner() * Matrix3::from_diagonal(&scale);
            let r = r.cast::<f32>();
            let t = m.translation.vector.cast::<f32>();
            self.cam_verts.clear();
            self.cam_verts.extend(mesh.verts.iter().map(|p| {
                let c = r * Vector3::from(*p) + t;
                [c.x, c.y, c.z]
            }));
            // Whole shape behind the camera: skip.
            if self.cam_verts.iter().all(|p| p[2] < NEAR) {
                continue;
            }
            for tri in &mesh.tris {
                let a = Vector3::from(self.cam_verts[tri[0] as usize]);
                let b = Vector3::from(self.cam_verts[tri[1] as usize]);
                let c = Vector3::from(self.cam_verts[tri[2] as usize]);
                let n = (b - a).cross(&(c - a));
                // Back faces (the camera is at the origin).
                if n.dot(&a) >= 0.0 {
                    continue;
                }
                let n = n.normalize();
                // Main light plus a fill light from the camera, both per face.
                let shade = self.ambient + 0.55 * n.dot(&light).max(0.0) + 0.22 * (-n.z).max(0.0);
                let color = [0, 1, 2].map(|i| (v.color[i] * shade * 255.0).clamp(0.0, 255.0) as u8);
                raster_clipped([a, b, c], color, &k, w, h, &mut self.inv_z, &mut frame.rgb);
            }
        }
        frame.depth.clear();
        frame.depth.extend(
            self.inv_z
                .iter()
                .map(|iz| if *iz > 0.0 { 1.0 / iz } else { f32::NAN }),
        );
    }
}

/// Clips a camera-space triangle against the near plane, then rasterizes it.
fn raster_clipped(
    tri: [Vector3<f32>; 3],
    color: [u8; 3],
    k: &[f32; 4],
    w: usize,
    h: usize,
    inv_z: &mut [f32],
    rgb: &mut [u8],
) {
    let mut poly = [Vector3::zeros(); 4];
    let mut n = 0;
    if tri.iter().all(|p| p.z >= NEAR) {
        poly[..3].copy_from_slice(&tri);
        n = 3;
    } else {
        for i in 0..3 {
            let (p, q) = (tri[i], tri[(i + 1) % 3]);
            if p.z >= NEAR {
                poly[n] = p;
                n += 1;
            }
            if (p.z >= NEAR) != (q.z >= NEAR) {
                let s = (NEAR - p.z) / (q.z - p.z);
                poly[n] = p + (q - p) * s;
                n += 1;
            }
        }
    }
    let proj = |p: &Vector3<f32>| [k[0] * p.x / p.z + k[2], k[1] * p.y / p.z + k[3], 1.0 / p.z];
    for i in 1..n.saturating_sub(1) {
        raster(
            [proj(&poly[0]), proj(&poly[i]), proj(&poly[i + 1])],
            color,
            w,
            h,
            inv_z,
            rgb,
        );
    }
}

/// Fills a screen-space triangle (x, y, 1/z) with a depth test on 1/z.
fn raster(p: [[f32; 3]; 3], color: [u8; 3], w: usize, h: usize, inv_z: &mut [f32], rgb: &mut [u8]) {
    let area =
        (p[1][0] - p[0][0]) * (p[2][1] - p[0][1]) - (p[1][1] - p[0][1]) * (p[2][0] - p[0][0]);
    if area.abs() < 1e-9 || !area.is_finite() {
        return;
    }
    let min_x = p
        .iter()
        .map(|q| q[0])
        .fold(f32::INFINITY, f32::min)
        .ceil()
        .max(0.0);
    let max_x = p
        .iter()
        .map(|q| q[0])
        .fold(f32::NEG_INFINITY, f32::max)
        .floor()
        .min(w as f32 - 1.0);
    let min_y = p
        .iter()
        .map(|q| q[1])
        .fold(f32::INFINITY, f32::min)
        .ceil()
        .max(0.0);
    let max_y = p
        .iter()
        .map(|q| q[1])
        .fold(f32::NEG_INFINITY, f32::max)
        .floor()
        .min(h as f32 - 1.0);
    if min_x > max_x || min_y > max_y {
        return;
    }
    let inv_area = 1.0 / area;
    // Edge functions e_i(x, y) = A_i x + B_i y + C_i, normalised so inside is positive.
    let edge = |a: [f32; 3], b: [f32; 3]| {
        let ea = (a[1] - b[1]) * inv_area;
        let eb = (b[0] - a[0]) * inv_area;
        let ec = (a[0] * b[1] - a[1] * b[0]) * inv_area;
        (ea, eb, ec)
    };
    let e0 = edge(p[1], p[2]);
    let e1 = edge(p[2], p[0]);
    let e2 = edge(p[0], p[1]);
    // 1/z is affine in screen space.
    let dzdx = e0.0 * p[0][2] + e1.0 * p[1][2] + e2.0 * p[2][2];
    let (x0, x1) = (min_x as usize, max_x as usize);
    for y in min_y as usize..=max_y as usize {
        let fy = y as f32;
        let fx = x0 as f32;
        let mut w0 = e0.0 * fx + e0.1 * fy + e0.2;
        let mut w1 = e1.0 * fx + e1.1 * fy + e1.2;
        let mut w2 = e2.0 * fx + e2.1 * fy + e2.2;
        let mut iz = w0 * p[0][2] + w1 * p[1][2] + w2 * p[2][2];
        let row = y * w;
        for x in x0..=x1 {
            if w0 >= 0.0 && w1 >= 0.0 && w2 >= 0.0 {
                let i = row + x;
                if iz > inv_z[i] {
                    inv_z[i] = iz;
                    rgb[3 * i..3 * i + 3].copy_from_slice(&color);
                }
            }
            w0 += e0.0;
            w1 += e1.0;
            w2 += e2.0;
            iz += dzdx;
        }
    }
}

impl Frame {
    /// Writes the RGB image as a PNG file.
    pub fn write_png(&self, path: &std::path::Path) -> std::io::Result<()> {
        let file = std::fs::File::create(path)?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), self.width, self.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(std::io::Error::other)?;
        w.write_image_data(&self.rgb)
            .map_err(std::io::Error::other)?;
        w.finish().map_err(std::io::Error::other)
    }
}
