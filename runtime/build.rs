// Tells the `ros2` feature's code whether a ROS 2 installation is sourced (r2r needs one).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(rft_ros2_not_sourced)");
    println!("cargo::rerun-if-env-changed=AMENT_PREFIX_PATH");
    if std::env::var_os("CARGO_FEATURE_ROS2").is_some()
        && std::env::var_os("AMENT_PREFIX_PATH").is_none()
    {
        println!("cargo::rustc-cfg=rft_ros2_not_sourced");
    }
}
