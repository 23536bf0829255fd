//! Just enough of a BTF reader to find struct member offsets in the running
//! kernel, so the KSAL programs read `struct file` and friends correctly on
//! every kernel without CO-RE relocations (which Rust eBPF programs cannot
//! emit yet).
//!
//! aya-obj 0.3's `Btf` parses the same data, but its public API ends at
//! `id_by_type_name_kind` (a type's id, not its contents): `type_by_id`,
//! `types`, `string_at`, `Struct::members`, `BtfMember` and
//! `FuncProto::params` are all `pub(crate)`, so neither member offsets nor
//! a function's parameter count can be read through it.
use std::path::Path;

use ksal_common::KernelLayout;

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF at {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF)")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("kernel BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF has no function {0}")]
    NoFunc(String),
    #[error("kernel BTF struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

pub type Result<T> = std::result::Result<T, BtfError>;

struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

struct Type {
    name_off: u32,
    kind: u32,
    /// The size, or the referenced type (FUNC: its FUNC_PROTO).
    size_or_type: u32,
    vlen: u32,
    members: Vec<Member>,
}

/// Parsed kernel BTF: the struct and union types and the string table.
pub struct Btf {
    types: Vec<Type>, // index = type id - 1
    strings: Vec<u8>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != BTF_MAGIC {
            return Err(BtfError::Malformed(
                "bad magic (only little-endian BTF is read)",
            ));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_start = hdr_len + type_off;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        let section = data
            .get(types_start..types_start + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;

        let mut types = Vec::new();
        let mut at = 0;
        while at < section.len() {
            let name_off = u32_at(section, at)?;
            let info = u32_at(section, at + 4)?;
            let size_or_type = u32_at(section, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => at += 12,
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let raw_offset = u32_at(section, at + 8)?;
                        members.push(Member {
                            name_off: u32_at(section, at)?,
                            type_id: u32_at(section, at + 4)?,
                            // With kind_flag the top 8 bits are a bitfield size.
                            bit_offset: if kind_flag {
                                raw_offset & 0x00ff_ffff
                            } else {
                                raw_offset
                            },
                        });
                        at += 12;
                    }
                }
                KIND_ENUM | KIND_FUNC_PROTO => at += 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => at += 12 * vlen,
                _ => {}
            }
            types.push(Type {
                name_off,
                kind,
                size_or_type,
                vlen: vlen as u32,
                members,
            });
        }
        Ok(Self { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    fn type_by_id(&self, id: u32) -> Option<&Type> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    /// Byte offset of `member` in `struct strukt`, looking through anonymous
    /// struct and union members as C does.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32> {
        let ty = self
            .types
            .iter()
            .find(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == strukt.as_bytes())
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        self.find_member(ty, member.as_bytes(), 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            })
    }

    fn find_member(&self, ty: &Type, member: &[u8], base_bits: u32) -> Option<u32> {
        for m in &ty.members {
            if m.name_off != 0 && self.name(m.name_off) == member {
                return Some(base_bits + m.bit_offset);
            }
        }
        ty.members.iter().filter(|m| m.name_off == 0).find_map(|m| {
            let inner = self.type_by_id(m.type_id)?;
            matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                .then(|| self.find_member(inner, member, base_bits + m.bit_offset))?
        })
    }

    /// How many parameters kernel function `func` takes.
    pub fn func_params(&self, func: &str) -> Result<u32> {
        let f = self
            .types
            .iter()
            .find(|t| t.kind == KIND_FUNC && self.name(t.name_off) == func.as_bytes())
            .ok_or_else(|| BtfError::NoFunc(func.to_owned()))?;
        self.type_by_id(f.size_or_type)
            .filter(|p| p.kind == KIND_FUNC_PROTO)
            .map(|p| p.vlen)
            .ok_or(BtfError::Malformed("a FUNC without its FUNC_PROTO"))
    }

    /// The field offsets the KSAL programs need.
    pub fn kernel_layout(&self) -> Result<KernelLayout> {
        Ok(KernelLayout {
            file_f_inode: self.member_offset("file", "f_inode")?,
            file_f_mode: self.member_offset("file", "f_mode")?,
            inode_i_ino: self.member_offset("inode", "i_ino")?,
            inode_i_sb: self.member_offset("inode", "i_sb")?,
            super_block_s_dev: self.member_offset("super_block", "s_dev")?,
            dentry_d_inode: self.member_offset("dentry", "d_inode")?,
            super_block_s_type: self.member_offset("super_block", "s_type")?,
            file_system_type_name: self.member_offset("file_system_type", "name")?,
            path_dentry: self.member_offset("path", "dentry")?,
            _pad: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF: struct outer { int a; union { int b; int c; }; } with
    /// `a` at byte 0 and the anonymous union at byte 8.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0".to_vec();
        let (int, outer, a, b, c) = (1u32, 5u32, 11u32, 13u32, 15u32);
        let mut t = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| t.extend(w.to_le_bytes()));
        push(&[int, KIND_INT << 24, 4, 32]); // id 1: int
        push(&[0, (KIND_UNION << 24) | 2, 4, b, 1, 0, c, 1, 0]); // id 2: union
        push(&[outer, (KIND_STRUCT << 24) | 2, 16, a, 1, 0, 0, 2, 64]); // id 3
        let mut data = Vec::new();
        data.extend(BTF_MAGIC.to_le_bytes());
        data.extend([1u8, 0]);
        for w in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            data.extend(w.to_le_bytes());
        }
        data.extend(t);
        data.extend(strings);
        data
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "b").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "c").unwrap(), 8);
    }

    #[test]
    fn reports_missing_struct_and_member() {
        let btf = Btf::parse(&sample()).unwrap();
        assert!(matches!(
            btf.member_offset("nope", "a"),
            Err(BtfError::NoStruct(_))
        ));
        let err = btf.member_offset("outer", "zz").unwrap_err().to_string();
        assert!(err.contains("outer") && err.contains("zz"), "{err}");
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, definitely not").is_err());
    }

    #[test]
    fn reads_the_running_kernel_when_present() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux on this host");
            return;
        };
        let layout = btf.kernel_layout().unwrap();
        // i_ino and i_sb are near the start of struct inode on every kernel.
        assert!(layout.inode_i_sb < 256 && layout.inode_i_ino < 256);
        assert_ne!(layout.file_f_inode, layout.file_f_mode);
    }
}
