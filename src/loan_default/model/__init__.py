"""The model artifact format: booster (XGBoost UBJ + ONNX) and a JSON model card, no pickle."""
