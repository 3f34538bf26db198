//! `docker-compose config` accepts docker-compose.yml (Debian's docker-compose validates
//! without an engine; `scripts/services.sh up` installs it), and `.dockerignore` keeps build
//! output and local data out of the image's build context.

use std::path::Path;
use std::process::Command;

#[test]
fn docker_compose_accepts_the_compose_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new("docker-compose")
        .current_dir(&root)
        .args(["-f", "docker-compose.yml", "config"])
        .output()
        .expect("docker-compose is installed (scripts/services.sh up installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for service in ["kafka:", "clickhouse:", "seaweedfs:", "producer:", "consumer:", "game-rounds:"] {
        assert!(stdout.contains(service), "service {service} missing from:\n{stdout}");
    }
    assert!(stdout.contains("replicas: 2"), "consumer replicas missing");
    assert_eq!(
        stdout.matches("restart: unless-stopped").count(),
        6,
        "every service restarts unless stopped:\n{stdout}"
    );
    assert!(stdout.contains("SHARDFLOW__API__TOKEN"), "the API gets its token from the environment:\n{stdout}");
}

#[test]
fn the_build_context_leaves_out_build_output_and_data() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore exists");
    let patterns: Vec<&str> = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for dir in ["target", ".services", "data", ".git"] {
        assert!(
            patterns.iter().any(|p| p.trim_start_matches('/').trim_end_matches('/') == dir),
            "{dir}/ is not in .dockerignore: {patterns:?}"
        );
    }
}
