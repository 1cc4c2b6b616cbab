"""`varco-ocr eval`: data set loaders, prediction readers/writers, the standard OCR metrics
(RRC detection and end-to-end, ICDAR2013 DetEval, CLEval, CER/NED) and the report."""
