//! A test-pattern camera: rgb8 frames (gradient plus a moving square) and matching
//! `camera_info`, stamped on the runtime's clock. The placeholder for the sim camera.

use std::time::Duration;

use rft_msgs::{CameraInfo, Header, Image};
use serde::Deserialize;

use rft_config::check;
use rft_runtime::Result;
use rft_runtime::bus::{NodeHandle, Publisher};
use rft_runtime::launch::{LaunchCtx, NodeKind};
use rft_runtime::{Node, StepCtx};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCameraParams {
    #[serde(default = "default_w")]
    pub width: u32,
    #[serde(default = "default_h")]
    pub height: u32,
    #[serde(default = "default_frame")]
    pub frame_id: String,
}

fn default_w() -> u32 {
    128
}
fn default_h() -> u32 {
    128
}
fn default_frame() -> String {
    "camera_color_optical_frame".into()
}

impl TestCameraParams {
    pub fn validate(&self) -> rft_config::Result<()> {
        check((8..=4096).contains(&self.width), "width", || {
            format!("{} is outside 8..=4096", self.width)
        })?;
        check((8..=4096).contains(&self.height), "height", || {
            format!("{} is outside 8..=4096", self.height)
        })
    }
}

/// Renders frame `n` of the test pattern into `data` (rgb8, `width * 3` bytes per row).
pub fn render_pattern(width: u32, height: u32, n: u64, data: &mut Vec<u8>) {
    let (w, h) = (width as usize, height as usize);
    data.clear();
    data.resize(w * h * 3, 0);
    let side = (w.min(h) / 4).max(1);
    let x0 = (n as usize * 3) % w.saturating_sub(side).max(1);
    let y0 = h / 2 - side / 2;
    for (i, px) in data.chunks_exact_mut(3).enumerate() {
        let (x, y) = (i % w, i / w);
        let inside = (x0..x0 + side).contains(&x) && (y0..y0 + side).contains(&y);
        px[0] = if inside {
            230
        } else {
            (x * 255 / w.max(1)) as u8
        };
        px[1] = if inside {
            40
        } else {
            (y * 255 / h.max(1)) as u8
        };
        px[2] = if inside { 40 } else { 96 };
    }
}

pub struct TestCamera {
    name: String,
    p: TestCameraParams,
    period: Duration,
    image: Publisher<Image>,
    info: Publisher<CameraInfo>,
    frame: u64,
}

impl TestCamera {
    pub fn new(
        name: String,
        p: TestCameraParams,
        period: Duration,
        bus: &NodeHandle,
    ) -> Result<Self> {
        Ok(Self {
            image: bus.publisher("/camera/color/image_raw")?,
            info: bus.publisher("/camera/color/camera_info")?,
            name,
            p,
            period,
            frame: 0,
        })
    }
}

impl Node for TestCamera {
    fn name(&self) -> &str {
        &self.name
    }
    fn period(&self) -> Option<Duration> {
        Some(self.period)
    }
    fn step(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        let header = Header {
            stamp: ctx.now,
            frame_id: self.p.frame_id.clone(),
        };
        let mut data = Vec::new();
        render_pattern(self.p.width, self.p.height, self.frame, &mut data);
        self.frame += 1;
        let (w, h) = (f64::from(self.p.width), f64::from(self.p.height));
        let f = w; // 53° horizontal field of view
        self.info.publish(CameraInfo {
            header: header.clone(),
            height: self.p.height,
            width: self.p.width,
            distortion_model: "plumb_bob".into(),
            d: vec![0.0; 5],
            k: [f, 0.0, w / 2.0, 0.0, f, h / 2.0, 0.0, 0.0, 1.0],
            r: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            p: [
                f,
                0.0,
                w / 2.0,
                0.0,
                0.0,
                f,
                h / 2.0,
                0.0,
                0.0,
                0.0,
                1.0,
                0.0,
            ],
            ..Default::default()
        })?;
        self.image.publish(Image {
            header,
            height: self.p.height,
            width: self.p.width,
            encoding: "rgb8".into(),
            is_bigendian: 0,
            step: self.p.width * 3,
            data,
        })
    }
}

impl NodeKind for TestCameraParams {
    const KIND: &'static str = "test_camera";
    const DEFAULT_RATE_HZ: f64 = 10.0;

    fn validate(&self) -> rft_config::Result<()> {
        TestCameraParams::validate(self)
    }

    fn build(
        &self,
        name: String,
        period: Duration,
        bus: &NodeHandle,
        _ctx: &LaunchCtx,
    ) -> Result<Box<dyn Node>> {
        Ok(Box::new(TestCamera::new(name, self.clone(), period, bus)?))
    }
}
