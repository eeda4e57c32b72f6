"""The leakage audit: what each party could still infer from what it received, and the defences' ε."""
