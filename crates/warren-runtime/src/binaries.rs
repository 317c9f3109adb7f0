//! The helper binaries the jail driver runs: `warren-jailer`, and the statically linked
//! `warren-agent` it executes inside sandboxes.

use std::path::Path;

/// Checks the helper binaries. A dynamically linked agent is refused: it runs inside arbitrary
/// images, which may have no libc or a different one.
pub(crate) fn check_binaries(agent: &Path, jailer: &Path) -> Result<(), String> {
    use std::io::Read;
    // The ELF and program headers lead the file (the linker puts them first); reading the
    // whole binary would cost more than the rest of a create.
    let mut bytes = Vec::new();
    std::fs::File::open(agent)
        .and_then(|f| f.take(64 << 10).read_to_end(&mut bytes))
        .map_err(|e| {
            format!(
                "warren-agent not found at {} ({e}); build it with scripts/build.sh",
                agent.display()
            )
        })?;
    if elf_has_interpreter(&bytes) {
        return Err(format!(
            "warren-agent at {} is dynamically linked; build the static one with scripts/build.sh",
            agent.display()
        ));
    }
    if !jailer.is_file() {
        return Err(format!("warren-jailer not found at {}", jailer.display()));
    }
    Ok(())
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP program header.
fn elf_has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if elf.get(..4) != Some(b"\x7fELF") {
        return true;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return true;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return true;
    };
    // A header outside what was read counts as an interpreter: refuse rather than guess.
    (0..usize::from(phnum)).any(|i| {
        i.checked_mul(usize::from(phentsize))
            .and_then(|o| o.checked_add(phoff))
            .and_then(u32_at)
            .is_none_or(|kind| kind == 3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_dynamic_elf() {
        let bash = std::fs::read("/bin/sh").unwrap();
        assert!(
            elf_has_interpreter(&bash),
            "/bin/sh is dynamically linked on Debian"
        );
        assert!(
            elf_has_interpreter(b"#!/bin/sh\n"),
            "non-ELF counts as unusable"
        );
    }
}
