//! Bad launch files are rejected before anything runs, with the file, the key and the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;

use rft_runtime::launch;

const GOOD: &str = r#"
name = "t"
[[nodes]]
name = "arm"
kind = "kinematic_arm"
[[nodes]]
name = "cmd"
kind = "joint_sine"
"#;

fn err(text: &str) -> String {
    match launch::parse(&rft_nodes::registry(), Path::new("bad.toml"), text, &[]) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn assert_names(msg: &str, key: &str, reason: &str) {
    assert!(msg.starts_with("bad.toml: "), "file missing: {msg}");
    assert!(msg.contains(key), "key `{key}` missing: {msg}");
    assert!(msg.contains(reason), "reason `{reason}` missing: {msg}");
}

#[test]
fn the_good_file_and_the_shipped_launch_files_validate() {
    let l = launch::parse(&rft_nodes::registry(), Path::new("good.toml"), GOOD, &[]).unwrap();
    assert_eq!(l.nodes.len(), 2);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch");
    for entry in std::fs::read_dir(root).unwrap() {
        let p = entry.unwrap().path();
        launch::load(&rft_nodes::registry(), &p, &[]).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn unknown_key() {
    let m = err(&format!("{GOOD}\nspeed = 3\n"));
    assert_names(&m, "speed", "unknown field `speed`");
    let m = err("name = \"t\"\n[bus]\nkind = \"zenoh\"\nmulticast = true\n");
    assert_names(&m, "bus.multicast", "unknown field `multicast`");
    let m = err(
        "name = \"t\"\n[[nodes]]\nname = \"a\"\nkind = \"kinematic_arm\"\nparams = { joint_namez = [] }\n",
    );
    assert_names(
        &m,
        "nodes[0].params.joint_namez",
        "unknown field `joint_namez`",
    );
}

#[test]
fn wrong_type() {
    let m = err("name = \"t\"\nduration_s = \"ten\"\n");
    assert_names(&m, "duration_s", "invalid type: string \"ten\"");
    let m = err(
        "name = \"t\"\n[[nodes]]\nname = \"a\"\nkind = \"joint_sine\"\nparams = { joints = 1.5 }\n",
    );
    assert_names(&m, "nodes[0].params.joints", "invalid type");
    let m = err("name = \"t\"\n[bus]\nkind = \"carrier_pigeon\"\n");
    assert_names(&m, "bus.kind", "unknown variant `carrier_pigeon`");
}

#[test]
fn missing_file() {
    let e = launch::load(
        &rft_nodes::registry(),
        Path::new("/nonexistent/launch.toml"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("/nonexistent/launch.toml: (file): cannot read launch file"),
        "{e}"
    );
    let m = err("name = \"t\"\n[bus.zenoh]\nconfig_file = \"/nonexistent/zenoh.json5\"\n");
    assert_names(&m, "bus.zenoh.config_file", "does not exist");
}

#[test]
fn bad_topic_name() {
    let m = err(
        "name = \"t\"\n[[nodes]]\nname = \"a\"\nkind = \"kinematic_arm\"\nremap = { \"/joint_states\" = \"joint states\" }\n",
    );
    assert_names(
        &m,
        "nodes[0].remap.\"/joint_states\"",
        "must start with `/`",
    );
    let m = err(
        "name = \"t\"\n[[nodes]]\nname = \"r\"\nkind = \"recorder\"\nparams = { topics = [\"/ok\", \"/a//b\"] }\n",
    );
    assert_names(&m, "nodes[0].params.topics[1]", "empty segment");
}

#[test]
fn duplicate_node_name() {
    let m = err(&format!(
        "{GOOD}\n[[nodes]]\nname = \"arm\"\nkind = \"test_camera\"\n"
    ));
    assert_names(&m, "nodes[2].name", "duplicate node name `arm`");
}

#[test]
fn other_checks() {
    assert_names(
        &err("name = \"t\"\n[[nodes]]\nname = \"a\"\nkind = \"teleporter\"\n"),
        "nodes[0].kind",
        "unknown node kind `teleporter`",
    );
    assert_names(
        &err("name = \"t\"\nduration_s = -1.0\n"),
        "duration_s",
        "positive",
    );
    assert_names(
        &err("name = \"t\"\n[[nodes]]\nname = \"a\"\nkind = \"kinematic_arm\"\nrate_hz = 0\n"),
        "nodes[0].rate_hz",
        "positive",
    );
    assert_names(
        &err(
            "name = \"t\"\n[[nodes]]\nname = \"a\"\nkind = \"kinematic_arm\"\nparams = { initial_position = [0.0] }\n",
        ),
        "nodes[0].params.initial_position",
        "has 1 values but there are 7 joints",
    );
    assert_names(
        &err("name = \"t\"\n[bus.zenoh]\nlisten = [\"127.0.0.1\"]\n"),
        "bus.zenoh.listen[0]",
        "is not an endpoint",
    );
    // The ground-truth ablation replaces the classifiers; it is not one of several.
    assert_names(
        &err(
            "name = \"t\"\n[[nodes]]\nname = \"r\"\nkind = \"reward\"\nparams = { classifiers = [{ kind = \"ground_truth\" }, { kind = \"cnn\", weights = \"w.safetensors\" }] }\n",
        ),
        "nodes[0].params.classifiers",
        "name it alone",
    );
    // A second look needs the arm home.
    assert_names(
        &err(
            "name = \"t\"\n[[nodes]]\nname = \"e\"\nkind = \"episode_manager\"\nparams = { schedule = { confirm_at_home = true } }\n",
        ),
        "nodes[0].params.schedule.confirm_at_home",
        "home_s > 0",
    );
    assert_names(
        &err(
            "name = \"t\"\n[[nodes]]\nname = \"e\"\nkind = \"episode_manager\"\nparams = { look_frames = 0 }\n",
        ),
        "nodes[0].params.look_frames",
        "at least 1",
    );
    assert_names(
        &err(
            "name = \"t\"\n[[nodes]]\nname = \"s\"\nkind = \"safety_filter\"\nparams = { urdf = \"../sim/assets/panda.urdf\", homing = { posture = [0.0, 1.0] } }\n",
        ),
        "nodes[0].params.homing.posture",
        "7",
    );
    assert_names(&err("name = [\n"), "(syntax)", "line");
    assert_names(
        &err("[bus]\nkind = \"inproc\"\n"),
        "(root)",
        "missing field `name`",
    );
    if !cfg!(feature = "ros2") {
        assert_names(
            &err("name = \"t\"\n[bus]\nkind = \"ros2\"\n"),
            "bus.kind",
            "--features ros2",
        );
    }
}

#[test]
fn overrides_apply_before_validation() {
    let l = launch::parse(
        &rft_nodes::registry(),
        Path::new("g.toml"),
        GOOD,
        &["nodes.0.rate_hz=250".into(), "bus.kind=zenoh".into()],
    )
    .unwrap();
    assert_eq!(l.nodes[0].entry.rate_hz, Some(250.0));
    assert_eq!(l.file.bus.kind, launch::BusKind::Zenoh);
    assert!(l.resolved.contains("rate_hz = 250"), "{}", l.resolved);
    let e = launch::parse(
        &rft_nodes::registry(),
        Path::new("g.toml"),
        GOOD,
        &["nodes.9.rate_hz=1".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("nodes.9.rate_hz") && e.contains("index 9 is past the 2 entries"),
        "{e}"
    );
    let e = launch::parse(
        &rft_nodes::registry(),
        Path::new("g.toml"),
        GOOD,
        &["nodes.0.rate_hz=-5".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nodes[0].rate_hz"), "{e}");
    let e = launch::parse(
        &rft_nodes::registry(),
        Path::new("g.toml"),
        GOOD,
        &["novalue".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--set needs KEY=VALUE"), "{e}");
}

#[test]
fn a_partial_pipeline_table_keeps_the_pipeline_defaults_for_what_it_leaves_out() {
    use rft_autonomy::pipeline::{PipelineConfig, parse_config};
    let d = PipelineConfig::default();
    // No file, one nested key set from the command line.
    let c = parse_config(Path::new("(defaults)"), "", &["demos.noise_std=0.5".into()]).unwrap();
    assert_eq!(c.demos.noise_std, 0.5);
    assert_eq!(
        c.demos.episodes_per_direction,
        d.demos.episodes_per_direction
    );
    // A whole table set from the command line.
    let c = parse_config(
        Path::new("(defaults)"),
        "",
        &["plant.action={ max_linear_m_s = 0.1 }".into()],
    )
    .unwrap();
    assert_eq!(c.plant.action.max_linear_m_s, 0.1);
    assert_eq!(c.plant.action.max_yaw_rad_s, d.plant.action.max_yaw_rad_s);
    // A file with a partial table, and one key of another table.
    let c = parse_config(
        Path::new("p.toml"),
        "[reward]\nsteps = 100\n[pretrain]\nsteps = 7\n",
        &[],
    )
    .unwrap();
    assert_eq!((c.reward.steps, c.pretrain.steps), (100, 7));
    assert_eq!(c.reward.episodes, d.reward.episodes);
    assert_eq!(c.pretrain.hidden, d.pretrain.hidden);
    // The same through a launch file's [pipeline] section; unknown keys are still named, and
    // the in-process fine-tuning loop's table is gone (the node graph fine-tunes).
    let l = launch::parse(
        &rft_nodes::registry(),
        Path::new("l.toml"),
        &format!("{GOOD}\n[pipeline.reward]\nsteps = 100\n"),
        &[],
    )
    .unwrap();
    let p: PipelineConfig = rft_config::from_table(&l.file.pipeline.unwrap()).unwrap();
    assert_eq!(
        (p.reward.steps, p.reward.episodes),
        (100, d.reward.episodes)
    );
    let m = err(&format!("{GOOD}\n[pipeline.reward]\nstep = 5\n"));
    assert_names(&m, "pipeline.reward.step", "unknown field `step`");
    let m = err(&format!("{GOOD}\n[pipeline.finetune]\nsteps = 5\n"));
    assert_names(&m, "pipeline.finetune", "unknown field `finetune`");
}

#[test]
fn the_lockstep_executor_needs_a_sim_clock_and_the_in_process_bus() {
    assert_names(
        &err(&format!("{GOOD}[clock]\nexecutor = \"lockstep\"\n")),
        "clock.executor",
        "kind = \"sim\"",
    );
    assert_names(
        &err(&format!(
            "{GOOD}[clock]\nkind = \"sim\"\nexecutor = \"lockstep\"\n[bus]\nkind = \"zenoh\"\n"
        )),
        "clock.executor",
        "bus.kind = \"inproc\"",
    );
    assert_names(
        &err(&format!(
            "{GOOD}[clock]\nkind = \"sim\"\nexecutor = \"fast\"\n"
        )),
        "clock.executor",
        "unknown variant `fast`",
    );
    let ok = format!("{GOOD}[clock]\nkind = \"sim\"\nexecutor = \"lockstep\"\n");
    let l = launch::parse(&rft_nodes::registry(), Path::new("l.toml"), &ok, &[]).unwrap();
    assert_eq!(l.file.clock.executor, launch::ExecutorKind::Lockstep);
}

#[test]
fn every_launch_file_the_repository_ships_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let l = launch::parse(&rft_nodes::registry(), &path, &text, &[])
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!l.nodes.is_empty(), "{}", path.display());
            seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    seen.sort();
    assert!(
        seen.contains(&"sim_dry_run.toml".to_string()) && seen.contains(&"eval_graph.toml".into()),
        "{seen:?}"
    );
}
