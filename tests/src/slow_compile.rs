//! A component that is valid and small enough to load, but costly to compile: the
//! hostile input for the compile bounds. Built here with wasm-encoder, not checked in.

use wasm_encoder::{
    CodeSection, Component, Function, FunctionSection, Instruction, MemArg, MemArgTarget,
    MemorySection, MemoryType, Module, ModuleSection, TypeSection, ValType,
};

/// Locals per function: many values live at once make register allocation work hard.
const LOCALS: u32 = 2000;

/// A component holding one core module of `functions` functions, each mixing
/// `ops_per_function` multiply-adds of its parameter across its locals and storing
/// each result (so no optimisation can fold or drop the work).
pub fn slow_to_compile(functions: u32, ops_per_function: u32) -> Vec<u8> {
    let mut types = TypeSection::new();
    types.ty().function([ValType::I64], [ValType::I64]);
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: 1,
        maximum: Some(1),
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    let mut funcs = FunctionSection::new();
    let mut code = CodeSection::new();
    for f in 0..functions {
        funcs.function(0);
        let mut body = Function::new([(LOCALS, ValType::I64)]);
        for op in 0..ops_per_function {
            // A cheap, fixed scramble so every op reads two far-apart locals.
            let a = (op.wrapping_mul(7919) ^ f) % LOCALS + 1;
            let b = (op.wrapping_mul(104_729) + 13) % LOCALS + 1;
            let c = (op.wrapping_mul(1_299_709) + f) % LOCALS + 1;
            // memory[(op % 8192) * 8] = (locals[c] = locals[a] * locals[b] + param)
            body.instruction(&Instruction::I32Const(((op % 8192) * 8) as i32));
            body.instruction(&Instruction::LocalGet(a));
            body.instruction(&Instruction::LocalGet(b));
            body.instruction(&Instruction::I64Mul);
            body.instruction(&Instruction::LocalGet(0));
            body.instruction(&Instruction::I64Add);
            body.instruction(&Instruction::LocalTee(c));
            body.instruction(&Instruction::I64Store(MemArg {
                offset: 0,
                align: 3,
                target: MemArgTarget::Memory(0),
                ordering: None,
            }));
        }
        body.instruction(&Instruction::LocalGet(0));
        body.instruction(&Instruction::End);
        code.function(&body);
    }
    let mut module = Module::new();
    module
        .section(&types)
        .section(&funcs)
        .section(&memories)
        .section(&code);
    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    component.finish()
}
