//! A minimal ONNX reader: the node list and the initializers of a model file, nothing else.
//!
//! Only the protobuf fields that a weight loader needs are declared (field numbers from
//! `onnx/onnx.proto`); everything else in the file is skipped by the decoder. There is no graph
//! evaluator here: networks are written natively and take their weights from [`OnnxModel`].

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle_core::{Device, Tensor};
use prost::Message;

use crate::{Error, Result};

/// Largest model file [`OnnxModel::load`] accepts, in bytes.
pub const MAX_ONNX_BYTES: u64 = 64 * 1024 * 1024;

/// ONNX `TensorProto.DataType` code for 32-bit floats.
const DT_FLOAT: i32 = 1;
/// ONNX `TensorProto.DataType` code for 64-bit signed integers.
const DT_INT64: i32 = 7;

/// Wire structs, named after their `onnx.proto` messages.
mod proto {
    /// `ModelProto`: only the graph.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        /// `graph = 7`.
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
    }

    /// `GraphProto`: nodes, initializers and the names of inputs and outputs.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        /// `node = 1`, in topological order.
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        /// `initializer = 5`.
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
        /// `input = 11`.
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        /// `output = 12`.
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
    }

    /// `ValueInfoProto`: only the name.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        /// `name = 1`.
        #[prost(string, tag = "1")]
        pub name: String,
    }

    /// `NodeProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        /// `input = 1`.
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        /// `output = 2`.
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        /// `name = 3`.
        #[prost(string, tag = "3")]
        pub name: String,
        /// `op_type = 4`.
        #[prost(string, tag = "4")]
        pub op_type: String,
        /// `attribute = 5`.
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
    }

    /// `AttributeProto`: scalar, list and tensor values.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        /// `name = 1`.
        #[prost(string, tag = "1")]
        pub name: String,
        /// `f = 2`.
        #[prost(float, tag = "2")]
        pub f: f32,
        /// `i = 3`.
        #[prost(int64, tag = "3")]
        pub i: i64,
        /// `s = 4`.
        #[prost(bytes = "vec", tag = "4")]
        pub s: Vec<u8>,
        /// `t = 5`.
        #[prost(message, optional, tag = "5")]
        pub t: Option<TensorProto>,
        /// `floats = 7`.
        #[prost(float, repeated, tag = "7")]
        pub floats: Vec<f32>,
        /// `ints = 8`.
        #[prost(int64, repeated, tag = "8")]
        pub ints: Vec<i64>,
        /// `type = 20` (`AttributeType`: 1 FLOAT, 2 INT, 3 STRING, 4 TENSOR, 6 FLOATS, 7 INTS).
        #[prost(int32, tag = "20")]
        pub r#type: i32,
    }

    /// `TensorProto`: dense tensors stored inline (no external data).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        /// `dims = 1`.
        #[prost(int64, repeated, tag = "1")]
        pub dims: Vec<i64>,
        /// `data_type = 2`.
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        /// `float_data = 4`.
        #[prost(float, repeated, tag = "4")]
        pub float_data: Vec<f32>,
        /// `int64_data = 7`.
        #[prost(int64, repeated, tag = "7")]
        pub int64_data: Vec<i64>,
        /// `name = 8`.
        #[prost(string, tag = "8")]
        pub name: String,
        /// `raw_data = 9`, little-endian.
        #[prost(bytes = "vec", tag = "9")]
        pub raw_data: Vec<u8>,
        /// `data_location = 14` (1 = EXTERNAL, unsupported).
        #[prost(int32, tag = "14")]
        pub data_location: i32,
    }
}

/// Element values of an [`OnnxTensor`].
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit signed integers.
    I64(Vec<i64>),
}

/// A dense tensor read from the file: its shape and its values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxTensor {
    /// Shape; empty for a scalar.
    pub dims: Vec<usize>,
    /// Values, `dims.iter().product()` of them.
    pub data: TensorData,
}

impl OnnxTensor {
    /// The values as f32, or `None` for a non-float tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I64(_) => None,
        }
    }

    /// The values as i64, or `None` for a non-integer tensor.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Some(v),
            TensorData::F32(_) => None,
        }
    }

    /// Copies a float tensor onto `device` with its ONNX shape.
    pub fn to_candle(&self, device: &Device) -> candle_core::Result<Tensor> {
        match &self.data {
            TensorData::F32(v) => Tensor::from_slice(v, self.dims.as_slice(), device),
            TensorData::I64(v) => Tensor::from_slice(v, self.dims.as_slice(), device),
        }
    }
}

/// A node attribute, by the kind of value it holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    /// `FLOAT`.
    Float(f32),
    /// `INT`.
    Int(i64),
    /// `STRING` (raw bytes).
    String(Vec<u8>),
    /// `TENSOR`.
    Tensor(OnnxTensor),
    /// `FLOATS`.
    Floats(Vec<f32>),
    /// `INTS`.
    Ints(Vec<i64>),
    /// Any other kind (graphs, sparse tensors, ...), kept by its `AttributeType` code only.
    Other(i32),
}

/// One graph node.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxNode {
    /// Node name (may be empty).
    pub name: String,
    /// Operator, e.g. `Conv`.
    pub op_type: String,
    /// Names of the input values (initializers or outputs of earlier nodes); empty = absent.
    pub inputs: Vec<String>,
    /// Names of the values this node produces.
    pub outputs: Vec<String>,
    /// Attributes by name.
    pub attributes: HashMap<String, Attribute>,
}

impl OnnxNode {
    /// An `INT` attribute.
    pub fn attr_int(&self, name: &str) -> Option<i64> {
        match self.attributes.get(name) {
            Some(Attribute::Int(v)) => Some(*v),
            _ => None,
        }
    }

    /// A `FLOAT` attribute.
    pub fn attr_float(&self, name: &str) -> Option<f32> {
        match self.attributes.get(name) {
            Some(Attribute::Float(v)) => Some(*v),
            _ => None,
        }
    }

    /// An `INTS` attribute.
    pub fn attr_ints(&self, name: &str) -> Option<&[i64]> {
        match self.attributes.get(name) {
            Some(Attribute::Ints(v)) => Some(v),
            _ => None,
        }
    }

    /// A `STRING` attribute, as UTF-8 (lossy).
    pub fn attr_str(&self, name: &str) -> Option<String> {
        match self.attributes.get(name) {
            Some(Attribute::String(v)) => Some(String::from_utf8_lossy(v).into_owned()),
            _ => None,
        }
    }
}

/// The parts of an ONNX model a native port needs: nodes in file order and the initializers.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    /// Graph nodes, in the file's (topological) order.
    pub nodes: Vec<OnnxNode>,
    /// Initializers by name. `Identity` nodes over an initializer are folded in: their output
    /// name maps to a copy of the initializer too.
    pub initializers: HashMap<String, OnnxTensor>,
    /// Names of the graph inputs that are not initializers.
    pub inputs: Vec<String>,
    /// Names of the graph outputs.
    pub outputs: Vec<String>,
}

impl OnnxModel {
    /// Reads and decodes a model file of at most [`MAX_ONNX_BYTES`].
    pub fn load(path: &Path) -> Result<Self> {
        let err = |reason: String| model_error(path, reason);
        let file = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
        let len = file
            .metadata()
            .map_err(|e| err(format!("cannot stat: {e}")))?
            .len();
        if len > MAX_ONNX_BYTES {
            return Err(err(format!(
                "file is {len} bytes, the limit is {MAX_ONNX_BYTES}"
            )));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(MAX_ONNX_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| err(format!("cannot read: {e}")))?;
        if bytes.len() as u64 > MAX_ONNX_BYTES {
            return Err(err(format!("file grew past the limit of {MAX_ONNX_BYTES}")));
        }
        Self::from_bytes(&bytes).map_err(err)
    }

    /// Decodes a model from its serialized bytes; the error is a human-readable reason.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let model = proto::ModelProto::decode(bytes)
            .map_err(|e| format!("not an ONNX model (protobuf decode failed: {e})"))?;
        let graph = model
            .graph
            .ok_or_else(|| "not an ONNX model (no graph)".to_string())?;

        let mut initializers = HashMap::with_capacity(graph.initializer.len());
        for t in graph.initializer {
            let name = t.name.clone();
            let tensor = convert_tensor(t).map_err(|e| format!("initializer {name:?}: {e}"))?;
            initializers.insert(name, tensor);
        }

        let mut nodes = Vec::with_capacity(graph.node.len());
        for n in graph.node {
            let mut attributes = HashMap::with_capacity(n.attribute.len());
            for a in n.attribute {
                let value = convert_attribute(a.clone())
                    .map_err(|e| format!("node {:?} attribute {:?}: {e}", n.name, a.name))?;
                attributes.insert(a.name, value);
            }
            nodes.push(OnnxNode {
                name: n.name,
                op_type: n.op_type,
                inputs: n.input,
                outputs: n.output,
                attributes,
            });
        }

        // Fold `Identity(initializer)` into an alias, so loaders look weights up by one name.
        for n in &nodes {
            if n.op_type == "Identity" && n.inputs.len() == 1 && n.outputs.len() == 1 {
                if let Some(t) = initializers.get(&n.inputs[0]).cloned() {
                    initializers.insert(n.outputs[0].clone(), t);
                }
            }
        }

        let inputs = graph
            .input
            .into_iter()
            .map(|v| v.name)
            .filter(|name| !initializers.contains_key(name))
            .collect();
        let outputs = graph.output.into_iter().map(|v| v.name).collect();
        Ok(Self {
            nodes,
            initializers,
            inputs,
            outputs,
        })
    }

    /// The node that produces the value `output`, if any.
    pub fn producer(&self, output: &str) -> Option<&OnnxNode> {
        self.nodes
            .iter()
            .find(|n| n.outputs.iter().any(|o| o == output))
    }

    /// The nodes that read the value `input`, in file order.
    pub fn consumers<'a>(&'a self, input: &'a str) -> impl Iterator<Item = &'a OnnxNode> + 'a {
        self.nodes
            .iter()
            .filter(move |n| n.inputs.iter().any(|i| i == input))
    }
}

/// A [`Error::Model`] for the file at `path`, named after its file stem.
fn model_error(path: &Path, reason: String) -> Error {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Error::Model {
        name,
        path: path.to_path_buf(),
        reason,
    }
}

fn convert_attribute(a: proto::AttributeProto) -> std::result::Result<Attribute, String> {
    Ok(match a.r#type {
        1 => Attribute::Float(a.f),
        2 => Attribute::Int(a.i),
        3 => Attribute::String(a.s),
        4 => match a.t {
            Some(t) => Attribute::Tensor(convert_tensor(t)?),
            None => return Err("TENSOR attribute without a tensor".into()),
        },
        6 => Attribute::Floats(a.floats),
        7 => Attribute::Ints(a.ints),
        other => Attribute::Other(other),
    })
}

fn convert_tensor(t: proto::TensorProto) -> std::result::Result<OnnxTensor, String> {
    if t.data_location == 1 {
        return Err("external data is not supported".into());
    }
    let mut dims = Vec::with_capacity(t.dims.len());
    let mut count: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| format!("negative dimension in {:?}", t.dims))?;
        count = count
            .checked_mul(d)
            .ok_or_else(|| format!("dimensions {:?} overflow", t.dims))?;
        dims.push(d);
    }
    let data = match t.data_type {
        DT_FLOAT => TensorData::F32(if t.raw_data.is_empty() {
            t.float_data
        } else {
            t.raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }),
        DT_INT64 => TensorData::I64(if t.raw_data.is_empty() {
            t.int64_data
        } else {
            t.raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect()
        }),
        other => return Err(format!("unsupported data type {other}")),
    };
    let (len, elem) = match &data {
        TensorData::F32(v) => (v.len(), 4),
        TensorData::I64(v) => (v.len(), 8),
    };
    if len != count || (!t.raw_data.is_empty() && t.raw_data.len() != count * elem) {
        return Err(format!(
            "shape {dims:?} wants {count} values, the data holds {len}"
        ));
    }
    Ok(OnnxTensor { dims, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(OnnxModel::from_bytes(&[0xff, 0xff, 0xff, 0x01, 0x02]).is_err());
        assert!(OnnxModel::from_bytes(&[]).is_err());
    }

    #[test]
    fn decodes_a_hand_built_model() {
        let t = proto::TensorProto {
            dims: vec![2, 2],
            data_type: DT_FLOAT,
            raw_data: [1f32, 2., 3., 4.]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            name: "w".into(),
            ..Default::default()
        };
        let bad = proto::TensorProto {
            dims: vec![3],
            data_type: DT_INT64,
            int64_data: vec![1, 2],
            name: "bad".into(),
            ..Default::default()
        };
        let node = proto::NodeProto {
            input: vec!["w".into()],
            output: vec!["w2".into()],
            name: "id".into(),
            op_type: "Identity".into(),
            attribute: vec![proto::AttributeProto {
                name: "alpha".into(),
                f: 0.5,
                r#type: 1,
                ..Default::default()
            }],
        };
        let mut graph = proto::GraphProto {
            node: vec![node],
            initializer: vec![t],
            ..Default::default()
        };
        let bytes = proto::ModelProto {
            graph: Some(graph.clone()),
        }
        .encode_to_vec();
        let m = OnnxModel::from_bytes(&bytes).unwrap();
        assert_eq!(m.initializers["w2"].as_f32().unwrap(), &[1., 2., 3., 4.]);
        assert_eq!(m.nodes[0].attr_float("alpha"), Some(0.5));

        graph.initializer.push(bad);
        let bytes = proto::ModelProto { graph: Some(graph) }.encode_to_vec();
        assert!(OnnxModel::from_bytes(&bytes).is_err());
    }
}
