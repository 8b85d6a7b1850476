"""The real upstream artifacts (CRDs, chart values and schemas) and validators that use them."""
