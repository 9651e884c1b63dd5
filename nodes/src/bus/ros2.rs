//! Native ROS 2 transport over r2r (rcl/DDS).
//!
//! r2r generates its bindings from a sourced ROS 2 installation at build time, which this
//! workspace's CI cannot provide, so the feature is never built there.

#[cfg(all(feature = "ros2", not(rft_ros2_sourced)))]
compile_error!(
    "the `ros2` feature needs a sourced ROS 2 (Humble or Jazzy): run `source /opt/ros/<distro>/setup.bash`, \
     add `r2r` to nodes/Cargo.toml under the `ros2` feature, and build with \
     RUSTFLAGS='--cfg rft_ros2_sourced'. Without ROS 2, use bus.kind = \"zenoh\", which speaks rmw_zenoh's wire format."
);

#[cfg(rft_ros2_sourced)]
pub struct Ros2Transport;
