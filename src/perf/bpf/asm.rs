//! eBPF instructions, built in Rust with named jump targets: the few
//! programs fdbg loads are written here instruction by instruction, so that
//! building fdbg needs no BPF compiler.
//!
//! The encoding is the kernel's (`struct bpf_insn`, include/uapi/linux/bpf.h):
//! an opcode byte, the destination and source registers in one byte (dst in
//! the low nibble), a signed 16-bit offset and a signed 32-bit immediate. A
//! 64-bit immediate load takes two slots.

use rustc_hash::FxHashMap as HashMap;

/// A register: r0 (results), r1–r5 (arguments, clobbered by calls), r6–r9
/// (kept across calls), r10 (the frame pointer, read-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg(pub u8);

pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);
pub const R2: Reg = Reg(2);
pub const R3: Reg = Reg(3);
pub const R4: Reg = Reg(4);
pub const R5: Reg = Reg(5);
pub const R6: Reg = Reg(6);
pub const R7: Reg = Reg(7);
pub const R8: Reg = Reg(8);
pub const R9: Reg = Reg(9);
pub const R10: Reg = Reg(10);

/// Instruction classes.
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const JMP: u8 = 0x05;
const ALU64: u8 = 0x07;

/// Operand sources.
const K: u8 = 0x00;
const X: u8 = 0x08;

/// Memory access modes.
const IMM: u8 = 0x00;
const MEM: u8 = 0x60;

/// The width of a load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    W = 0x00,
    H = 0x08,
    B = 0x10,
    DW = 0x18,
}

/// 64-bit arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alu {
    Add = 0x00,
    Sub = 0x10,
    And = 0x50,
    Lsh = 0x60,
    Rsh = 0x70,
    Mov = 0xb0,
}

/// Conditional jumps (unsigned comparisons unless named signed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    Eq = 0x10,
    Gt = 0x20,
    Ge = 0x30,
    Ne = 0x50,
    Lt = 0xa0,
    Le = 0xb0,
}

const JA: u8 = 0x00;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;

/// `src_reg` of a 64-bit immediate load that names a map by its fd.
const PSEUDO_MAP_FD: u8 = 1;

/// One encoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (src.0 << 4) | (dst.0 & 0x0f),
            off,
            imm,
        }
    }

    fn bytes(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[0] = self.code;
        out[1] = self.regs;
        out[2..4].copy_from_slice(&self.off.to_le_bytes());
        out[4..8].copy_from_slice(&self.imm.to_le_bytes());
        out
    }
}

/// A program being written: instructions, and jumps waiting for their
/// labels.
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: HashMap<&'static str, usize>,
    jumps: Vec<(usize, &'static str)>,
}

/// A program that cannot be encoded: a jump to a label never placed, or
/// one too far for the 16-bit offset.
#[derive(Debug, thiserror::Error)]
pub enum AsmError {
    #[error("BPF program: jump to label `{0}`, which is not placed")]
    NoLabel(&'static str),
    #[error("BPF program: label `{0}` placed twice")]
    TwiceLabel(&'static str),
    #[error("BPF program: jump to `{0}` is out of range")]
    TooFar(&'static str),
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    fn push(&mut self, insn: Insn) {
        self.insns.push(insn);
    }

    /// Place `name` at the next instruction.
    pub fn label(&mut self, name: &'static str) -> Result<(), AsmError> {
        if self.labels.insert(name, self.insns.len()).is_some() {
            return Err(AsmError::TwiceLabel(name));
        }
        Ok(())
    }

    pub fn alu_imm(&mut self, op: Alu, dst: Reg, imm: i32) {
        self.push(Insn::new(ALU64 | K | op as u8, dst, R0, 0, imm));
    }

    pub fn alu_reg(&mut self, op: Alu, dst: Reg, src: Reg) {
        self.push(Insn::new(ALU64 | X | op as u8, dst, src, 0, 0));
    }

    pub fn mov_imm(&mut self, dst: Reg, imm: i32) {
        self.alu_imm(Alu::Mov, dst, imm);
    }

    pub fn mov(&mut self, dst: Reg, src: Reg) {
        self.alu_reg(Alu::Mov, dst, src);
    }

    /// dst = *(size *)(src + off)
    pub fn load(&mut self, size: Size, dst: Reg, src: Reg, off: i16) {
        self.push(Insn::new(LDX | MEM | size as u8, dst, src, off, 0));
    }

    /// *(size *)(dst + off) = src
    pub fn store(&mut self, size: Size, dst: Reg, off: i16, src: Reg) {
        self.push(Insn::new(STX | MEM | size as u8, dst, src, off, 0));
    }

    /// *(size *)(dst + off) = imm
    pub fn store_imm(&mut self, size: Size, dst: Reg, off: i16, imm: i32) {
        self.push(Insn::new(ST | MEM | size as u8, dst, R0, off, imm));
    }

    /// dst = the map whose fd is `fd` (two slots).
    pub fn load_map(&mut self, dst: Reg, fd: i32) {
        self.push(Insn::new(
            LD | IMM | Size::DW as u8,
            dst,
            Reg(PSEUDO_MAP_FD),
            0,
            fd,
        ));
        self.push(Insn::new(0, R0, R0, 0, 0));
    }

    /// if dst <cond> imm goto label
    pub fn jump_imm(&mut self, cond: Cond, dst: Reg, imm: i32, label: &'static str) {
        self.jumps.push((self.insns.len(), label));
        self.push(Insn::new(JMP | K | cond as u8, dst, R0, 0, imm));
    }

    /// if dst <cond> src goto label
    pub fn jump_reg(&mut self, cond: Cond, dst: Reg, src: Reg, label: &'static str) {
        self.jumps.push((self.insns.len(), label));
        self.push(Insn::new(JMP | X | cond as u8, dst, src, 0, 0));
    }

    pub fn goto(&mut self, label: &'static str) {
        self.jumps.push((self.insns.len(), label));
        self.push(Insn::new(JMP | JA, R0, R0, 0, 0));
    }

    /// Call kernel helper number `helper`: arguments in r1–r5, result in r0.
    pub fn call(&mut self, helper: i32) {
        self.push(Insn::new(JMP | CALL, R0, R0, 0, helper));
    }

    pub fn exit(&mut self) {
        self.push(Insn::new(JMP | EXIT, R0, R0, 0, 0));
    }

    /// The program's bytes, jumps resolved.
    pub fn finish(mut self) -> Result<Vec<u8>, AsmError> {
        for &(at, label) in &self.jumps {
            let target = *self.labels.get(label).ok_or(AsmError::NoLabel(label))?;
            let off = target as i64 - at as i64 - 1;
            self.insns[at].off = i16::try_from(off).map_err(|_| AsmError::TooFar(label))?;
        }
        Ok(self.insns.iter().flat_map(|i| i.bytes()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_the_kernel_reads_it() {
        let mut asm = Asm::new();
        asm.mov_imm(R0, 0); // b7 00 .. imm 0
        asm.jump_imm(Cond::Eq, R1, 7, "out"); // 15 01 off 1 imm 7
        asm.load(Size::DW, R2, R1, -8); // 79 12 f8 ff
        asm.label("out").unwrap();
        asm.exit(); // 95
        let bytes = asm.finish().unwrap();
        assert_eq!(
            bytes,
            [
                0xb7, 0x00, 0, 0, 0, 0, 0, 0, //
                0x15, 0x01, 1, 0, 7, 0, 0, 0, //
                0x79, 0x12, 0xf8, 0xff, 0, 0, 0, 0, //
                0x95, 0, 0, 0, 0, 0, 0, 0,
            ]
        );
    }

    #[test]
    fn a_jump_to_nowhere_is_refused() {
        let mut asm = Asm::new();
        asm.goto("nowhere");
        assert!(matches!(asm.finish(), Err(AsmError::NoLabel("nowhere"))));
    }
}
