"""otgate.config"""
