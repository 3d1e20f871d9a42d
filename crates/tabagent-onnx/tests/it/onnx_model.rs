use tabagent_onnx::{NamedTensor, OnnxModel, Provider, RunError, TensorData};

use crate::common::{ort_dataset, runtime};

#[test]
fn the_cpu_provider_is_chosen_and_every_other_says_why_not() {
    let runtime = runtime();
    let chosen = runtime.chosen();
    assert_eq!(chosen.last(), Some(&Provider::Cpu));
    for status in runtime.providers() {
        assert_eq!(status.chosen, status.reason.is_none(), "{status:?}");
    }
    assert_eq!(runtime.providers().len(), Provider::PREFERENCE.len());
}

#[test]
fn a_model_reports_its_inputs_and_outputs_and_runs_named_tensors() {
    let model = OnnxModel::load(&runtime(), &ort_dataset("mul_1.onnx"), 2).expect("loads");
    assert_eq!(model.sessions(), 2);
    let input = &model.inputs()[0];
    assert_eq!(
        (input.name.as_str(), input.element_type.as_str()),
        ("X", "float32")
    );
    assert_eq!(input.shape, vec![Some(3), Some(2)]);
    assert_eq!(model.outputs()[0].name, "Y");
    let outputs = model
        .run(vec![NamedTensor {
            name: "X".into(),
            shape: vec![3, 2],
            data: TensorData::Float32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        }])
        .expect("runs");
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].name, "Y");
    assert_eq!(outputs[0].shape, vec![3, 2]);
    assert_eq!(
        outputs[0].data,
        TensorData::Float32(vec![1.0, 4.0, 9.0, 16.0, 25.0, 36.0])
    );
}

#[test]
fn bad_tensors_are_refused_before_the_runtime_sees_them() {
    let model = OnnxModel::load(&runtime(), &ort_dataset("mul_1.onnx"), 1).expect("loads");
    let tensor = |name: &str, shape: Vec<i64>, data: TensorData| NamedTensor {
        name: name.into(),
        shape,
        data,
    };
    let cases = [
        (
            vec![tensor("Z", vec![3, 2], TensorData::Float32(vec![0.0; 6]))],
            "no input `Z`",
        ),
        (vec![], "input `X` is missing"),
        (
            vec![tensor("X", vec![3, 2], TensorData::Int64(vec![0; 6]))],
            "element type int64",
        ),
        (
            vec![tensor("X", vec![6], TensorData::Float32(vec![0.0; 6]))],
            "1 dimensions",
        ),
        (
            vec![tensor("X", vec![2, 3], TensorData::Float32(vec![0.0; 6]))],
            "fixes it at 3",
        ),
        (
            vec![tensor("X", vec![3, 2], TensorData::Float32(vec![0.0; 5]))],
            "5 were given",
        ),
        (
            vec![tensor("X", vec![3, -2], TensorData::Float32(vec![]))],
            "negative",
        ),
    ];
    for (inputs, expected) in cases {
        match model.run(inputs) {
            Err(RunError::BadInput(message)) => {
                assert!(message.contains(expected), "{message:?} lacks {expected:?}")
            }
            other => panic!("expected a BadInput error with {expected:?}, got {other:?}"),
        }
    }
}

#[test]
fn outputs_of_types_not_returned_are_named() {
    let model = OnnxModel::load(&runtime(), &ort_dataset("logreg_iris.onnx"), 1).expect("loads");
    let names: Vec<&str> = model.outputs().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["label", "probabilities"]);
    let result = model.run(vec![NamedTensor {
        name: "float_input".into(),
        shape: vec![3, 2],
        data: TensorData::Float32(vec![5.1, 3.5, 4.9, 3.0, 6.2, 3.4]),
    }]);
    match result {
        Err(RunError::UnsupportedOutput { name, .. }) => assert_eq!(name, "probabilities"),
        other => panic!("expected UnsupportedOutput, got {other:?}"),
    }
}
