//! The layout of a raw syscall tracepoint's record, read from tracefs
//! (`events/raw_syscalls/sys_exit/format`) when a sampler opens, so that
//! the decoder follows the kernel it runs on instead of hard-coded offsets.
//!
//! Only the two raw syscall tracepoints are understood: `sys_enter`
//! (`long id; unsigned long args[6]`) and `sys_exit` (`long id; long ret`).
//! The offsets are within PERF_SAMPLE_RAW's data, which starts with the
//! common header (`common_type`, `common_pid`, ...).

/// One `field:` line of a tracefs format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The declared name without an array suffix: `args` for `args[6]`.
    pub name: String,
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
}

impl Field {
    /// The integer of `size` 1, 2, 4 or 8 bytes at `offset + 8 * index`,
    /// sign-extended when the field is signed; None past the end of `raw`.
    fn int(&self, raw: &[u8], index: usize) -> Option<i64> {
        let width = if self.name_is_array() { 8 } else { self.size };
        let at = self.offset + width * index;
        let bytes = raw.get(at..at + width)?;
        let mut word = [0u8; 8];
        word[..width].copy_from_slice(bytes);
        let value = u64::from_ne_bytes(word);
        let shift = 64 - 8 * width as u32;
        Some(if self.signed && shift > 0 {
            ((value << shift) as i64) >> shift
        } else {
            value as i64
        })
    }

    fn name_is_array(&self) -> bool {
        self.size > 8
    }
}

/// The fields of a format file, in order. Lines that are not `field:` lines
/// (name, ID, print fmt) are skipped; a field line that does not parse is
/// left out.
pub fn parse_fields(text: &str) -> Vec<Field> {
    text.lines().filter_map(parse_field).collect()
}

/// `field:long ret;\toffset:16;\tsize:8;\tsigned:1;`
fn parse_field(line: &str) -> Option<Field> {
    let rest = line.trim().strip_prefix("field:")?;
    let mut parts = rest.split(';').map(str::trim);
    let declaration = parts.next()?;
    let name = declaration.split_whitespace().last()?;
    let name = name.split('[').next()?.trim_start_matches('*');
    let mut number = |key: &str| -> Option<usize> { parts.next()?.strip_prefix(key)?.parse().ok() };
    let offset = number("offset:")?;
    let size = number("size:")?;
    let signed = number("signed:")? != 0;
    Some(Field {
        name: name.to_string(),
        offset,
        size,
        signed,
    })
}

/// What a raw syscall tracepoint says about one syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallRecord {
    /// `raw_syscalls:sys_enter`: the number and the six argument registers.
    Enter { nr: i64, args: [u64; 6] },
    /// `raw_syscalls:sys_exit`: the number and the result (a negative errno
    /// on failure).
    Exit { nr: i64, ret: i64 },
}

impl SyscallRecord {
    /// The syscall number.
    pub fn nr(&self) -> i64 {
        match *self {
            SyscallRecord::Enter { nr, .. } | SyscallRecord::Exit { nr, .. } => nr,
        }
    }
}

/// Where a raw syscall tracepoint keeps the syscall number and its result
/// or arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallLayout {
    id: Field,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Enter { args: Field },
    Exit { ret: Field },
}

impl SyscallLayout {
    /// The layout of a format with an `id` field and either a `ret` field
    /// (sys_exit) or an `args` array of 8-byte words (sys_enter); None for
    /// any other tracepoint.
    pub fn from_fields(fields: &[Field]) -> Option<SyscallLayout> {
        let find = |name: &str| fields.iter().find(|f| f.name == name).cloned();
        let id = find("id").filter(|f| f.size <= 8)?;
        let kind = match (find("ret"), find("args")) {
            (Some(ret), _) if ret.size <= 8 => Kind::Exit { ret },
            (_, Some(args)) if args.size % 8 == 0 && args.size / 8 <= 6 => Kind::Enter { args },
            _ => return None,
        };
        Some(SyscallLayout { id, kind })
    }

    /// The record in a sample's raw data; None when the data is shorter
    /// than the layout says.
    pub fn decode(&self, raw: &[u8]) -> Option<SyscallRecord> {
        let nr = self.id.int(raw, 0)?;
        Some(match &self.kind {
            Kind::Exit { ret } => SyscallRecord::Exit {
                nr,
                ret: ret.int(raw, 0)?,
            },
            Kind::Enter { args } => {
                let mut values = [0u64; 6];
                for (i, value) in values.iter_mut().enumerate().take(args.size / 8) {
                    *value = args.int(raw, i)? as u64;
                }
                SyscallRecord::Enter { nr, args: values }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS_EXIT: &str = "name: sys_exit
ID: 442
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:long id;\toffset:8;\tsize:8;\tsigned:1;
\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;

print fmt: \"NR %ld = %ld\", REC->id, REC->ret
";

    const SYS_ENTER: &str = "format:
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:long id;\toffset:8;\tsize:8;\tsigned:1;
\tfield:unsigned long args[6];\toffset:16;\tsize:48;\tsigned:0;
";

    fn words(words: &[i64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    #[test]
    fn fields_are_read_with_their_offsets_and_array_names() {
        let fields = parse_fields(SYS_ENTER);
        assert_eq!(
            fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            ["common_pid", "id", "args"]
        );
        assert_eq!(
            fields[2],
            Field {
                name: "args".into(),
                offset: 16,
                size: 48,
                signed: false
            }
        );
    }

    #[test]
    fn sys_exit_gives_the_number_and_a_negative_result() {
        let layout = SyscallLayout::from_fields(&parse_fields(SYS_EXIT)).unwrap();
        let raw = words(&[442, 3, -9, 0]);
        assert_eq!(
            layout.decode(&raw),
            Some(SyscallRecord::Exit { nr: 3, ret: -9 })
        );
        assert_eq!(layout.decode(&raw[..20]), None);
    }

    #[test]
    fn sys_enter_gives_six_arguments() {
        let layout = SyscallLayout::from_fields(&parse_fields(SYS_ENTER)).unwrap();
        let raw = words(&[0, 257, -100, 0x1000, 2, 3, 4, 5]);
        assert_eq!(
            layout.decode(&raw),
            Some(SyscallRecord::Enter {
                nr: 257,
                args: [(-100i64) as u64, 0x1000, 2, 3, 4, 5]
            })
        );
    }

    #[test]
    fn a_tracepoint_without_a_result_or_arguments_has_no_syscall_layout() {
        let fields = parse_fields("\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n");
        assert_eq!(SyscallLayout::from_fields(&fields), None);
    }
}
