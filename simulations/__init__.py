"""otgate.simulations"""
