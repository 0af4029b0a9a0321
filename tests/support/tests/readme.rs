//! The workspace README's Rust examples are the adapters' compiled ones: every Rust
//! code block of the root `README.md` stands, to the letter, in exactly one adapter's
//! `README.md`, which that adapter compiles as its doc tests (`ReadmeDoctests`). An
//! example edited in one place and not the other fails here.
//!
//! This test lives in the unpublished support crate, not in `sluice`: the core is
//! published on its own, and its tests must not read files outside its package.

use std::path::{Path, PathBuf};

/// The adapters whose README examples the root README may repeat.
const ADAPTERS: &[&str] = &["adapters/tokio", "adapters/smol", "adapters/http"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fenced code block: its info string and its text.
#[derive(Debug, PartialEq, Eq)]
struct Block {
    info: String,
    code: String,
}

impl Block {
    /// Rust as rustdoc sees it: an empty info string, or `rust` first.
    fn is_rust(&self) -> bool {
        let first = self.info.split([',', ' ']).next().unwrap_or_default();
        first.is_empty() || first == "rust"
    }

    /// rustdoc compiles it (`ignore` skips compiling; `no_run` still compiles).
    fn is_compiled(&self) -> bool {
        self.is_rust() && !self.info.split([',', ' ']).any(|a| a == "ignore")
    }
}

/// The ```-fenced blocks of a Markdown text.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    code: String::new(),
                })
            }
            (Some(_), Some("")) => out.extend(open.take()),
            (Some(block), _) => {
                block.code.push_str(line);
                block.code.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block");
    out
}

#[test]
fn every_root_readme_example_is_an_adapters_compiled_example() {
    let root = workspace();
    let adapters: Vec<(&str, Vec<Block>)> = ADAPTERS
        .iter()
        .map(|dir| (*dir, blocks(&read(&root.join(dir).join("README.md")))))
        .collect();
    for (dir, _) in &adapters {
        let lib = read(&root.join(dir).join("src/lib.rs"));
        assert!(
            lib.contains("#[doc = include_str!(\"../README.md\")]\n#[cfg(doctest)]"),
            "{dir}/src/lib.rs does not compile its README's examples"
        );
    }
    let examples: Vec<Block> = blocks(&read(&root.join("README.md")))
        .into_iter()
        .filter(Block::is_rust)
        .collect();
    assert!(!examples.is_empty(), "no Rust example found in README.md");
    for example in &examples {
        let first = example.code.lines().find(|l| !l.is_empty()).unwrap_or("");
        let owners: Vec<&str> = adapters
            .iter()
            .filter(|(_, theirs)| {
                theirs
                    .iter()
                    .any(|b| b.is_compiled() && b.code == example.code)
            })
            .map(|(dir, _)| *dir)
            .collect();
        assert_eq!(
            owners.len(),
            1,
            "README.md's example starting `{first}` must stand verbatim in exactly one \
             of {ADAPTERS:?}/README.md, as a compiled Rust block; found in {owners:?}"
        );
    }
}

#[test]
fn blocks_are_parsed_with_their_info_strings() {
    let md = "text\n```rust\nfn a() {}\n```\n\n```sh\nls\n```\n```\nlet x = 1;\n```\n";
    let found = blocks(md);
    let infos: Vec<&str> = found.iter().map(|b| b.info.as_str()).collect();
    assert_eq!(infos, ["rust", "sh", ""]);
    assert_eq!(found[0].code, "fn a() {}\n");
    let rust: Vec<bool> = found.iter().map(Block::is_rust).collect();
    assert_eq!(rust, [true, false, true]);
    let ignored = Block {
        info: "rust,ignore".to_owned(),
        code: String::new(),
    };
    assert!(ignored.is_rust() && !ignored.is_compiled());
}
