"""DeDe: the decoder model, its training, calibration and the one scoring API."""
