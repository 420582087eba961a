//! Regenerates `src/dump/envoy.bin`, the descriptor set the proto3 JSON dumps use, from the
//! one the `envoy-types` crate ships (which it does not expose): source info stripped, every
//! file kept. Run by `scripts/envoy-descriptors.sh` after upgrading `envoy-types`.
//!
//! Usage: `envoy_descriptors TYPES_BIN OUT`.

use prost::Message;
use prost_reflect::prost_types::FileDescriptorSet;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(input), Some(output)) = (args.get(1), args.get(2)) else {
        return Err("usage: envoy_descriptors TYPES_BIN OUT".into());
    };
    let mut set = FileDescriptorSet::decode(std::fs::read(input)?.as_slice())?;
    for f in &mut set.file {
        f.source_code_info = None;
    }
    set.file.sort_by(|a, b| a.name.cmp(&b.name));
    // Checks that the result is a complete pool before writing it.
    let bytes = set.encode_to_vec();
    let pool = prost_reflect::DescriptorPool::decode(bytes.as_slice())?;
    println!(
        "{} files, {} messages, {} bytes",
        set.file.len(),
        pool.all_messages().count(),
        bytes.len()
    );
    std::fs::write(output, bytes)?;
    Ok(())
}
