"""The MeTRAbs-style estimator: pure TensorFlow, no files, no Ray, no Beam."""
