"""`adaspec adapt`: distil a candidate draft from captured traffic, gate it offline by replay."""
