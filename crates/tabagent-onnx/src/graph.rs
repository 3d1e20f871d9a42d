//! A small builder for ONNX graphs: named nodes, initializers, inputs and outputs.

use crate::proto::{
    attribute_type, data_type, AttributeProto, Dimension, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
};

/// The ONNX opset graphs are written against (`LayerNormalization` needs 17).
pub const OPSET: i64 = 17;
/// The IR version that goes with [`OPSET`].
const IR_VERSION: i64 = 8;

/// An attribute value.
pub enum Attr {
    /// A float.
    Float(f32),
    /// An integer.
    Int(i64),
    /// Integers.
    Ints(Vec<i64>),
    /// A string.
    Str(&'static str),
}

/// A dimension of a graph input or output.
pub enum Dim {
    /// Fixed.
    Fixed(i64),
    /// Named, sized at run time.
    Symbol(&'static str),
}

/// ONNX Runtime's own operators (`DynamicQuantizeMatMul`, ...).
pub const MICROSOFT_DOMAIN: &str = "com.microsoft";

/// Builds one graph; every node's output gets a unique name.
pub struct GraphBuilder {
    graph: GraphProto,
    counter: usize,
    /// Whether a node uses [`MICROSOFT_DOMAIN`] (its opset is then imported).
    uses_microsoft: bool,
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new(name: &str) -> Self {
        Self {
            graph: GraphProto {
                name: name.to_string(),
                ..GraphProto::default()
            },
            counter: 0,
            uses_microsoft: false,
        }
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem_type: i32, dims: &[Dim]) -> String {
        self.graph.input.push(value_info(name, elem_type, dims));
        name.to_string()
    }

    /// Declares `value` a graph output under `name`.
    pub fn output(&mut self, value: &str, name: &str, elem_type: i32, dims: &[Dim]) {
        self.node("Identity", &[value], &[], name);
        self.graph.output.push(value_info(name, elem_type, dims));
    }

    /// A float initializer.
    pub fn f32s(&mut self, name: &str, dims: &[i64], data: &[f32]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, data_type::FLOAT, dims, raw)
    }

    /// An int8 initializer.
    pub fn i8s(&mut self, name: &str, dims: &[i64], data: &[i8]) -> String {
        let raw = data.iter().map(|v| v.to_le_bytes()[0]).collect();
        self.initializer(name, data_type::INT8, dims, raw)
    }

    /// An int64 initializer.
    pub fn i64s(&mut self, name: &str, dims: &[i64], data: &[i64]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, data_type::INT64, dims, raw)
    }

    /// A float scalar.
    pub fn scalar(&mut self, name: &str, value: f32) -> String {
        self.f32s(name, &[], &[value])
    }

    /// Adds a node whose single output is called `hint` plus a counter; returns that name.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        self.counter += 1;
        let output = format!("{}_{}", op_type.to_ascii_lowercase(), self.counter);
        self.node(op_type, inputs, attrs, &output);
        output
    }

    /// Like [`GraphBuilder::op`], for an operator of ONNX Runtime's [`MICROSOFT_DOMAIN`].
    pub fn microsoft_op(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
    ) -> String {
        let output = self.op(op_type, inputs, attrs);
        if let Some(node) = self.graph.node.last_mut() {
            node.domain = MICROSOFT_DOMAIN.to_string();
        }
        self.uses_microsoft = true;
        output
    }

    /// The finished model.
    pub fn finish(self) -> ModelProto {
        let mut opset_import = vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }];
        if self.uses_microsoft {
            opset_import.push(OperatorSetIdProto {
                domain: MICROSOFT_DOMAIN.to_string(),
                version: 1,
            });
        }
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: "tabagent".to_string(),
            producer_version: env!("CARGO_PKG_VERSION").to_string(),
            graph: Some(self.graph),
            opset_import,
        }
    }

    fn node(&mut self, op_type: &str, inputs: &[&str], attrs: &[(&str, Attr)], output: &str) {
        let attribute = attrs
            .iter()
            .map(|(name, value)| attribute(name, value))
            .collect();
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_string()).collect(),
            output: vec![output.to_string()],
            name: output.to_string(),
            op_type: op_type.to_string(),
            attribute,
            domain: String::new(),
        });
    }

    /// Adds an initializer; a constant asked for again by name is shared.
    fn initializer(&mut self, name: &str, data_type: i32, dims: &[i64], raw: Vec<u8>) -> String {
        if self.graph.initializer.iter().any(|t| t.name == name) {
            return name.to_string();
        }
        self.graph.initializer.push(TensorProto {
            dims: dims.to_vec(),
            data_type,
            name: name.to_string(),
            raw_data: raw,
        });
        name.to_string()
    }
}

fn attribute(name: &str, value: &Attr) -> AttributeProto {
    let mut attr = AttributeProto {
        name: name.to_string(),
        ..AttributeProto::default()
    };
    match value {
        Attr::Float(f) => {
            attr.f = *f;
            attr.r#type = attribute_type::FLOAT;
        }
        Attr::Int(i) => {
            attr.i = *i;
            attr.r#type = attribute_type::INT;
        }
        Attr::Ints(ints) => {
            attr.ints.clone_from(ints);
            attr.r#type = attribute_type::INTS;
        }
        Attr::Str(s) => {
            attr.s = s.as_bytes().to_vec();
            attr.r#type = attribute_type::STRING;
        }
    }
    attr
}

fn value_info(name: &str, elem_type: i32, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => Dimension {
                dim_value: Some(*v),
                dim_param: None,
            },
            Dim::Symbol(s) => Dimension {
                dim_value: None,
                dim_param: Some((*s).to_string()),
            },
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}
