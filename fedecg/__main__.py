from fedecg.cli import main

main()
