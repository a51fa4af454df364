//! The import rule: a module of `src/` only imports from its own layer or the layers below it,
//! in the order commands -> service -> act -> record -> decide -> read -> config/fsutil.

use std::path::Path;

/// Layers from the bottom up; a file may import its own rank or lower.
const ORDER: [&[&str]; 7] = [
    &["config", "fsutil"],
    &["read"],
    &["decide"],
    &["record"],
    &["act"],
    &["service"],
    &["commands"],
];

fn rank(module: &str) -> Option<usize> {
    ORDER.iter().position(|layer| layer.contains(&module))
}

/// Every `crate::X` the file at `path` names (code and doc links alike).
fn imported(text: &str) -> Vec<String> {
    text.match_indices("crate::")
        .map(|(i, _)| {
            text[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn no_import_runs_up_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut checked = 0;
    let mut wrong = Vec::new();
    for path in files {
        let rel = path.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let own = top.trim_end_matches(".rs");
        let Some(own_rank) = rank(own) else {
            continue; // lib.rs, main.rs: the wiring above every layer
        };
        checked += 1;
        for module in imported(&std::fs::read_to_string(&path).unwrap()) {
            let Some(r) = rank(&module) else {
                continue;
            };
            if r > own_rank {
                wrong.push(format!("{} imports crate::{module}", rel.display()));
            }
        }
    }
    assert!(checked > 30, "only {checked} files checked");
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_check_sees_an_upward_import() {
    assert_eq!(
        imported("use crate::act::apply;\nuse crate::read::snapshot::{self, State};"),
        vec!["act", "read"]
    );
    assert!(rank("act") > rank("record"));
    assert!(rank("read") < rank("decide"));
}
